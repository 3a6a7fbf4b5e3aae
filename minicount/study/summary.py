"""Write a finished run's tables and report into its folder: models.csv, heads.csv,
results.json, figures and report.md, from the cell folders' snapshot records.

Import direction: run -> summary -> rows, verdicts, figures and report. Each file is
written atomically (safeio).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..record import jsonable
from ..safeio import atomic_write
from . import classes, report
from .classes import SHARE_CUT
from .figures import draw_figures
from .rows import BALANCED_W01, SEMANTIC_AUC, SUPPRESSED_W02, collect, csv_text, final_rows, l2_used
from .verdicts import (
    DOMINANT_N_EFF,
    GAP,
    MARGIN_RATIO,
    REFERENCE,
    SENSITIVITY,
    cell_statistics,
    claims,
    l2_verdicts,
    mean_verdict,
    over_training,
    sensitivity,
    short_answer,
    verdict,
)


def summarise(spec, out: Path, *, meta: dict, figures: bool = True) -> dict:
    """Write models.csv, heads.csv, results.json, figures and report.md from the cell folders."""
    models, heads, finals = collect(spec, out)
    atomic_write(out / "models.csv", csv_text(models))
    atomic_write(out / "heads.csv", csv_text(heads))
    final_models, final_heads = final_rows(models, spec), final_rows(heads, spec)
    stats = {n: cell_statistics(final_models[n], final_heads[n]) for n in spec.names}
    verdicts = {n: verdict(stats[n]) for n in spec.names}
    multi = [n for n in spec.names if stats[n]["n_heads"] > 1]
    results = {
        "meta": meta,
        "spec": spec.to_dict(),
        "statistics": {n: jsonable(s) for n, s in stats.items()},
        "verdicts": verdicts,
        "mean_verdicts": {n: mean_verdict(stats[n]) for n in spec.names},
        "sensitivity": {n: sensitivity(stats[n], final_models[n], final_heads[n])
                        for n in multi},
        "churn": {n: over_training(heads, n) for n in multi},
        "claims": claims(stats),
        "l2": {"used": l2_used(finals), "verdicts": l2_verdicts(stats)},
        "short_answer": short_answer(verdicts, stats),
        "thresholds": {"semantic_auc": SEMANTIC_AUC, "share": SHARE_CUT,
                       "margin_ratio": MARGIN_RATIO, "reference": REFERENCE,
                       "sensitivity": SENSITIVITY, "limit_share": classes.LIMIT_SHARE,
                       "limit_leave": classes.LIMIT_LEAVE, "balanced_w01": list(BALANCED_W01),
                       "suppressed_w02": SUPPRESSED_W02, "gap": GAP,
                       "dominant_n_eff": DOMINANT_N_EFF},
    }  # fmt: skip
    drawn = []
    if figures:
        drawn = draw_figures(spec, models, heads, finals, stats, out / "figures")
    atomic_write(out / "results.json", json.dumps(jsonable(results), indent=1, allow_nan=False))
    atomic_write(out / "report.md", report.render(results, stats, drawn))
    return results
