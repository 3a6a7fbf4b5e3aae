"""The report and its figures (minicount/study/report.py, figures.py): its numbers come from
the rows, its figures have titles, labelled axes and legends, and a failed write leaves the
previous report whole."""

import json
import os

import numpy as np
import pytest

from minicount.cli import main
from minicount.study.presets import preset
from minicount.study.run import COMPLETE

from .helpers import TINY_SWEEP, read_csv


def test_report_numbers_come_from_the_rows(quick_run):
    report = (quick_run / "report.md").read_text()
    for section in ("## Short answer", "## Verdicts", "## The numbers", "## Against the paper"):
        assert section in report
    results = json.loads((quick_run / "results.json").read_text())
    models = read_csv(quick_run / "models.csv")
    last = [r for r in models if r["name"] == "H=2" and r["step"] == r["steps"]]
    mean = np.mean([float(r["l_acc"]) for r in last])
    assert results["statistics"]["H=2"]["l_acc"]["value"] == pytest.approx(mean)
    # every Markdown table row has as many cells as its header
    for block in report.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            widths = {len(ln.replace("\\|", "").split("|")) for ln in lines}
            assert len(widths) == 1, block[:200]


def test_the_report_classes_models_and_its_shares_come_from_the_head_rows(quick_run):
    report = (quick_run / "report.md").read_text()
    for section in ("## Per-model classes", "three references", "## Sensitivity",
                    "## Classes through training"):  # fmt: skip
        assert section in report, section
    results = json.loads((quick_run / "results.json").read_text())
    heads = [r for r in read_csv(quick_run / "heads.csv")
             if r["name"] == "H=2" and r["step"] == r["steps"]]  # fmt: skip
    by_seed = {}
    for r in heads:  # recount the class of each model from its heads, independently
        by_seed.setdefault(r["seed"], []).append(float(r["auc_two_sided"] or 0) >= 0.9)
    every = sum(all(v) for v in by_seed.values()) / len(by_seed)
    stats = results["statistics"]["H=2"]
    assert stats["class_every"]["value"] == pytest.approx(every)
    assert stats["class_every"]["method"] == "wilson" and stats["l_acc"]["method"] == "t"
    assert sum(stats[f"class_{c}"]["value"] for c in ("every", "some", "one", "none")) == 1
    labels = results["sensitivity"]["H=2"]["labels"]
    assert labels["default"] == results["verdicts"]["H=2"]["label"] and len(labels) == 11


def test_figures_have_titles_labelled_axes_and_legends(quick_run):
    """The matplotlib objects, not pixels: every figure has a title, labelled axes, and a
    legend wherever it draws more than one setting."""
    from minicount.study import figures
    from minicount.study.rows import collect, final_rows
    from minicount.study.verdicts import cell_statistics

    spec = preset("quick")
    models, heads, finals = collect(spec, quick_run)
    fm, fh = final_rows(models, spec), final_rows(heads, spec)
    stats = {n: cell_statistics(fm[n], fh[n]) for n in spec.names}
    for name, _, draw in figures.FIGURES:
        fig = draw(figures._plt(), spec, models, heads, stats)
        if fig is None:
            continue
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        titled = fig._suptitle is not None or all(ax.get_title() for ax in axes)
        assert titled, name
        assert all(ax.get_title() or ax.get_ylabel() for ax in axes), name  # what is plotted
        assert any(ax.get_xlabel() for ax in axes), name
        if name in ("accuracy.png", "training.png", "roles.png", "ratios.png", "heads.png"):
            assert any(ax.get_legend() is not None for ax in axes), name


def test_a_failed_report_write_leaves_no_half_files_and_no_completion_marker(tmp_path, monkeypatch):
    """A full disk while the report is written: the previous report stays whole, nothing
    half-written or temporary is left, COMPLETE is not written; the rerun completes."""
    import errno

    import minicount.study.report as report

    argv = ["sweep", "--set", "n_heads=2", "--steps", "10", *TINY_SWEEP, "--no-figures",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    before = (tmp_path / "report.md").read_text()
    (tmp_path / "cells" / "stale.json.abc.tmp").write_text("left by a killed writer")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "render", full_disk)
    assert main(argv) == 2
    assert not (tmp_path / COMPLETE).exists()
    assert (tmp_path / "report.md").read_text() == before
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    # the disk fills while report.md's temporary file is renamed into place
    import minicount.safeio as safeio

    real_replace = os.replace

    def replace_fails_for_the_report(src, dst):
        if str(dst).endswith("report.md"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(safeio.os, "replace", replace_fails_for_the_report)
    assert main(argv) == 2
    assert (tmp_path / "report.md").read_text() == before
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / COMPLETE).exists()
    monkeypatch.undo()
    assert main(argv) == 0 and (tmp_path / COMPLETE).exists()


def test_the_phase_map_shows_each_square_with_its_interval_on_a_fixed_scale():
    from dataclasses import replace

    from minicount.stats import Interval
    from minicount.study.figures import _Figures, _phase
    from minicount.study.spec import BASE, SweepSpec
    from minicount.study.verdicts import GAP, MOST_HEADS

    cells = [replace(BASE, weight_decay=wd, steps=s) for wd in (0.0, 0.1) for s in (600, 3000)]
    names = [f"c{k}" for k in range(4)]
    spec = SweepSpec(cells=tuple(cells), names=tuple(names), seeds=(0, 1))
    stats = {
        name: {
            "semantic_fraction": Interval(0.5 + 0.01 * k, 0.4, 0.6 + 0.01 * k, 2),
            "gap": Interval(0.04, 0.03, 0.05, 2),
        }
        for k, name in enumerate(names)
    }
    fig = _phase(_Figures, spec, [], [], stats)
    assert fig._suptitle.get_text() == "Phase map over weight_decay x steps"
    semantic, gap, *bars = fig.axes  # two maps, then their colour bars
    assert semantic.images[0].get_clim() == (0.0, 1.0)  # not stretched to 0.50-0.53
    assert gap.images[0].get_clim() == (0.0, 0.1)
    texts = sorted(t.get_text() for t in semantic.texts)
    assert texts == ["0.500\n[0.400, 0.600]", "0.510\n[0.400, 0.610]",
                     "0.520\n[0.400, 0.620]", "0.530\n[0.400, 0.630]"]  # fmt: skip
    cut_lines = [ax.lines[0].get_ydata()[0] for ax in bars]
    assert cut_lines == [MOST_HEADS, GAP]
    assert [ax.get_xlabel() for ax in (semantic, gap)] == ["weight_decay"] * 2
