"""The study: many models trained and analysed as a sweep of cells, and what is read from them.

presets   the named studies (quick, default, full, ...) as sweep specs
spec      what is run: Cell, SweepSpec, grid, parse_knob, snapshot_steps, cell_names
run       running it: run_cell, run_sweep, reanalyze, the folder and its snapshots, and
          write_report, the one writer of a run's report (every sweep and worker ends there)
workers   many workers on one folder: claims, locks, status
classes   per-model classes (every / some / one / none head counts) and churn
rows      rows per model and per head, read from the analysis records
verdicts  statistics per cell, verdicts, claims and their sensitivity
figures   the matplotlib figures
report    the Markdown report
analysis_text  the text the CLI's ``analyze`` prints for one analysis record
summary   writing a run's outputs (models.csv, heads.csv, results.json, report.md)
"""
