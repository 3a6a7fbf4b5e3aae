"""The sweep and the reproduce presets end to end on tiny runs; resume after SIGKILL; the
analyze command on a checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minicount as mc
from minicount.cli import main
from minicount.study import preset
from minicount.sweep import (
    COMPLETE,
    Cell,
    SweepSpec,
    cell_names,
    grid,
    parse_knob,
    run_sweep,
    snapshot_steps,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--set", "max_len=5", "--set", "d_model=8", "--set", "d_head=4", "--batch-size", "16",
        "--n-eval", "24", "--first-snapshot", "10", "--seeds", "0-2", "--quiet"]  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


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


def test_sweep_resumes_after_sigkill_with_the_same_rows(tmp_path):
    args = [sys.executable, "-m", "minicount", "sweep", "--set", "n_heads=1,2", "--steps", "80",
            *TINY, "--no-figures"]  # fmt: skip
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(args + ["--out", str(whole)], check=True, timeout=300)
    proc = subprocess.Popen(args + ["--out", str(cut)])
    first = Cell(n_heads=1, max_len=5, d_model=8, d_head=4, steps=80).key()
    deadline = time.time() + 120
    while not (cut / "cells" / first / "step_0000020.json").exists():
        assert proc.poll() is None and time.time() < deadline, "finished before the kill"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / COMPLETE).exists()
    subprocess.run(args + ["--out", str(cut)], check=True, timeout=300)
    assert (cut / COMPLETE).exists()
    for name in ("models.csv", "heads.csv"):
        assert read_csv(cut / name) == read_csv(whole / name), name
    assert not list(cut.rglob("*.tmp"))


def test_another_run_in_the_folder_is_refused(tmp_path, capsys):
    base = ["sweep", "--set", "n_heads=1", "--steps", "10", *TINY, "--no-figures",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(base) == 0
    capsys.readouterr()
    other = [a if a != "--steps" else a for a in base]
    other[other.index("10")] = "20"
    assert main(other) == 2
    err = capsys.readouterr().err.strip()
    assert "holds another run" in err and len(err.splitlines()) == 1
    assert main(other + ["--force"]) == 0
    spec = json.loads((tmp_path / "sweep.json").read_text())
    assert spec["cells"][0]["steps"] == 20
    assert {r["steps"] for r in read_csv(tmp_path / "models.csv")} == {"20"}


def test_a_folder_of_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["sweep", "--steps", "5", *TINY, "--out", str(tmp_path)]) == 2
    assert "holds no minicount sweep" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["sweep", "--set", "n_hedas=2"], "unknown knob"),
        (["sweep", "--set", "n_heads="], "has no values"),
        (["sweep", "--set", "n_heads=2,x"], "is not a int"),
        (["sweep", "--set", "p2=1.5"], "p2"),
        (["sweep", "--set", "n_heads=2", "--set", "n_heads=4"], "given twice"),
        (["sweep", "--set", "d_model=100000", "--seeds", "0-63"], "GiB"),
    ],
)
def test_bad_sweep_requests_fail_in_one_line_before_training(argv, words, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "cells").exists()


def test_knobs_grid_and_names():
    assert parse_knob("weight_decay=0,0.1") == ("weight_decay", [0.0, 0.1])
    assert parse_knob("bos=on,off") == ("bos", [True, False])
    cells = grid({"n_heads": [2, 4], "max_len": [32, 64]})
    assert [(c.n_heads, c.max_len) for c in cells] == [(2, 32), (2, 64), (4, 32), (4, 64)]
    assert cell_names(cells)[1] == "n_heads=2 max_len=64"
    assert snapshot_steps(800) == [25, 50, 100, 200, 400, 800]
    assert snapshot_steps(100, 25) == [25, 50, 100]
    with pytest.raises(ValueError, match="same knobs"):
        SweepSpec(cells=(Cell(), Cell()), names=("a", "b"), seeds=(0,))


def test_presets_are_sized_as_promised():
    default, full = preset("default"), preset("full")
    assert len(default.seeds) >= 8
    assert any(c.max_len == 64 and c.weight_decay == 0.1 for c in default.cells)  # paper-like
    assert max(c.steps for c in default.cells) >= 3 * min(c.steps for c in default.cells)
    assert len(full.seeds) >= 64
    for knob in ("n_heads", "weight_decay", "max_len", "steps"):
        assert len({getattr(c, knob) for c in full.cells}) >= 2, knob
    assert [c.n_heads for c in preset("default", heads=[2]).cells] == [2]


def test_analyze_checkpoint(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4)
    params, _ = mc.train(
        config, steps=2, seed=[0, 1], batch_size=8, max_len=6, eval_every=0, n_eval=16
    )
    ck = mc.save(tmp_path / "m.npz", params, config, info={"train": {"max_len": 6, "bos": True}})
    assert main(["analyze", str(ck), "--n-eval", "24", "--member", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in result["members"]] == [1]
    assert result["members"][0]["exact"] and len(result["members"][0]["semantics"]) == 2
    out = tmp_path / "a.json"
    assert main(["analyze", str(ck), "--n-eval", "24", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["members"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["reproduce", "--heads", "0"],
        ["reproduce", "--steps", "x"],
        ["reproduce", "--preset", "huge"],
    ],
)
def test_bad_reproduce_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_analyze_bad_member_is_one_line(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=1, d_model=8, d_head=4)
    ck = mc.save(tmp_path / "m.npz", mc.init_params(config, 0), config)
    assert main(["analyze", str(ck), "--member", "3", "--n-eval", "8"]) == 2
    assert "member" in capsys.readouterr().err


def test_run_sweep_api_without_figures(tmp_path):
    cell = Cell(n_heads=2, max_len=4, d_model=8, d_head=4, steps=12)
    spec = SweepSpec(cells=(cell,), names=("tiny",), seeds=(3, 4), batch_size=8, n_eval=16,
                     first_snapshot=6)  # fmt: skip
    results = run_sweep(spec, tmp_path, progress=False, figures=False)
    assert set(results["verdicts"]) == {"tiny"}
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").glob("*.png"))


def test_a_longer_cell_continues_its_shorter_twin_with_the_same_numbers(tmp_path):
    common = ["sweep", *TINY, "--no-figures"]
    assert main(common + ["--set", "steps=20,40", "--out", str(tmp_path / "both")]) == 0
    assert main(common + ["--set", "steps=40", "--out", str(tmp_path / "alone")]) == 0
    both = [r for r in read_csv(tmp_path / "both" / "models.csv") if r["steps"] == "40"]
    alone = read_csv(tmp_path / "alone" / "models.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "name"} for r in rows]  # noqa: E731
    assert strip(both) == strip(alone)
    shared = json.loads(
        (tmp_path / "both" / "sweep.json").read_text()
    )  # the 40-step cell took its first snapshots from the 20-step one
    long_key = Cell(**{**shared["cells"][1]}).key()
    first = json.loads((tmp_path / "both" / "cells" / long_key / "step_0000010.json").read_text())
    assert first["seconds"]["train"] == 0.0


def test_a_failed_report_write_leaves_no_half_files_and_no_completion_marker(tmp_path, monkeypatch):
    """A full disk while the report is written: the previous report stays whole, nothing
    half-written or temporary is left, COMPLETE is not written; the rerun completes."""
    import errno

    import minicount.report as report

    argv = ["sweep", "--set", "n_heads=2", "--steps", "10", *TINY, "--no-figures",
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


def test_analyze_prints_a_summary_table_by_default(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=3, d_model=16, d_head=4)
    params, _ = mc.train(config, steps=5, seed=[0, 1], batch_size=8, max_len=6, eval_every=0,
                         n_eval=16)  # fmt: skip
    ck = mc.save(tmp_path / "m.npz", params, config, info={"train": {"max_len": 6, "bos": True}})
    assert main(["analyze", str(ck), "--n-eval", "24"]) == 0
    text = capsys.readouterr().out
    assert text.count("model ") >= 2 and "weight share" in text
    table = [ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert len(table) == 2 * 3  # one line per head of each model
    assert main(["analyze", str(ck), "--n-eval", "24", "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    auc = parsed["members"][1]["semantics"][2]["auc_two_sided"]
    assert f"{auc:.3f}" in table[5]


def test_figures_have_titles_labelled_axes_and_legends(quick_run):
    """The matplotlib objects, not pixels: every figure has a title, labelled axes, and a
    legend wherever it draws more than one setting."""
    from minicount import report
    from minicount.results import cell_statistics, collect, final_rows

    spec = preset("quick")
    models, heads, finals = collect(spec, quick_run)
    fm, fh = final_rows(models, spec), final_rows(heads, spec)
    stats = {n: cell_statistics(fm[n], fh[n]) for n in spec.names}
    for name, _, draw in report.FIGURES:
        fig = draw(report._plt(), spec, models, heads, stats)
        if fig is None:
            continue
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        titled = fig._suptitle is not None or all(ax.get_title() for ax in axes)
        assert titled, name
        assert all(ax.get_title() or ax.get_ylabel() for ax in axes), name  # what is plotted
        assert any(ax.get_xlabel() for ax in axes), name
        if name in ("accuracy.png", "training.png", "roles.png", "ratios.png", "heads.png"):
            assert any(ax.get_legend() is not None for ax in axes), name
