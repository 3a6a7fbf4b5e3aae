"""The study (minicount/study/presets.py): the reproduce presets are sized as promised, and
the quick preset writes every promised file and row (bad reproduce arguments: test_cli.py)."""

import json
from dataclasses import replace

import minicount as mc
from minicount.study.presets import preset
from minicount.study.run import COMPLETE, reused_steps
from minicount.study.spec import snapshot_steps

from .helpers import read_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_run_writes_every_promised_file(quick_run):
    for name in ("report.md", "results.json", "models.csv", "heads.csv", "sweep.json", COMPLETE):
        assert (quick_run / name).is_file(), name
    names = {f.name for f in (quick_run / "figures").glob("*.png")}
    assert {"accuracy.png", "roles.png", "ratios.png", "heads.png", "weights.png"} <= names
    assert any(n.startswith("patterns_") for n in names)
    import matplotlib.image

    for f in (quick_run / "figures").glob("*.png"):
        assert f.read_bytes()[:8] == PNG_MAGIC, f
        assert matplotlib.image.imread(f).shape[0] > 50
    json.loads((quick_run / "results.json").read_text())  # valid JSON (no NaN)


def test_quick_run_rows_cover_every_cell_seed_snapshot_and_head(quick_run):
    spec = preset("quick")
    models, heads = read_csv(quick_run / "models.csv"), read_csv(quick_run / "heads.csv")
    expected_models = sum(len(snapshot_steps(c.steps, spec.first_snapshot)) for c in spec.cells)
    assert len(models) == expected_models * len(spec.seeds)
    expected_heads = sum(
        c.n_heads * len(snapshot_steps(c.steps, spec.first_snapshot)) for c in spec.cells
    )
    assert len(heads) == expected_heads * len(spec.seeds)
    for row in models:
        assert 0 <= float(row["l_acc"]) <= 1
    # every checkpoint in the folder is a trained ensemble that `analyze` can read
    for cell in spec.cells:
        ck = mc.load_checkpoint(quick_run / "cells" / cell.key() / "model.npz")
        assert ck["info"]["step"] == cell.steps
        assert ck["params"]["embed.W_E"].shape[0] == len(spec.seeds)


def test_presets_are_sized_as_promised():
    default, full = preset("default"), preset("full")
    assert len(default.seeds) >= 8
    assert any(c.max_len == 64 and c.weight_decay == 0.1 for c in default.cells)  # paper-like
    assert max(c.steps for c in default.cells) >= 3 * min(c.steps for c in default.cells)
    assert len(full.seeds) >= 64
    for knob in ("n_heads", "weight_decay", "max_len", "steps"):
        assert len({getattr(c, knob) for c in full.cells}) >= 2, knob
    # every combination reaches 10,000 steps (where the max_len 64 cell decided), trained once:
    # each longer cell comes after its shorter twin and continues from it
    combinations = {replace(c, steps=1) for c in full.cells}
    assert max(c.steps for c in full.cells) >= 10_000
    trained = sum(c.steps - r for c, r in zip(full.cells, reused_steps(full), strict=True))
    assert trained == len(combinations) * max(c.steps for c in full.cells)
    assert [c.n_heads for c in preset("default", heads=[2]).cells] == [2]
