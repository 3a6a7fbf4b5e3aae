"""The sweep (minicount/study/spec.py, run.py) end to end on tiny runs: knobs, grids and
names, bad requests refused before training, resume after SIGKILL to the same rows, a folder
of another run or of other files refused, cells that share their shorter twin's snapshots."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

import minicount as mc
from minicount.cli import main
from minicount.study.run import COMPLETE, run_sweep
from minicount.study.spec import Cell, SweepSpec, cell_names, grid, parse_knob, snapshot_steps

from .helpers import TINY_SWEEP, read_csv


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


def test_sweep_resumes_after_sigkill_with_the_same_rows(tmp_path):
    args = [sys.executable, "-m", "minicount", "sweep", "--set", "n_heads=1,2", "--steps", "80",
            *TINY_SWEEP, "--no-figures"]  # fmt: skip
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
    base = ["sweep", "--set", "n_heads=1", "--steps", "10", *TINY_SWEEP, "--no-figures",
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
    assert main(["sweep", "--steps", "5", *TINY_SWEEP, "--out", str(tmp_path)]) == 2
    assert "holds no minicount sweep" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_run_sweep_api_without_figures(tmp_path):
    cell = Cell(n_heads=2, max_len=4, d_model=8, d_head=4, steps=12)
    spec = SweepSpec(cells=(cell,), names=("tiny",), seeds=(3, 4), batch_size=8, n_eval=16,
                     first_snapshot=6)  # fmt: skip
    results = run_sweep(spec, tmp_path, progress=False, figures=False)
    assert set(results["verdicts"]) == {"tiny"}
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").glob("*.png"))


def test_a_longer_cell_continues_its_shorter_twin_with_the_same_numbers(tmp_path):
    common = ["sweep", *TINY_SWEEP, "--no-figures"]
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


def test_progress_counts_the_steps_trained_not_those_taken_from_a_twin(tmp_path, monkeypatch):
    """steps=20,40,40-with-decay: the 40-step twin of the 20-step cell trains 20 more steps; the
    other 40-step cell trains all 40. The bar's total is 80 steps and its count only rises."""
    import minicount.study.run as sweep

    seen = []

    class Recorder(sweep.Progress):
        def advance(self, n=1):
            assert n >= 0, "the step count went back"
            super().advance(n)
            seen.append((self.done, self.total))

    monkeypatch.setattr(sweep, "Progress", Recorder)
    base = Cell(n_heads=2, max_len=5, d_model=8, d_head=4, steps=20)
    cells = (base, replace(base, steps=40), replace(base, steps=40, weight_decay=0.1))
    spec = SweepSpec(cells=cells, names=("a", "b", "c"), seeds=(0, 1), batch_size=8, n_eval=16,
                     first_snapshot=10)  # fmt: skip
    assert sweep.reused_steps(spec) == [0, 20, 0]
    run_sweep(spec, tmp_path, progress=True, figures=False)
    assert seen[-1] == (80, 80)


def test_a_resumed_sweep_leaves_the_steps_done_before_out_of_its_rate(tmp_path, monkeypatch):
    """Rerun on a finished sweep, every step was trained by the earlier run: the bar shows them
    all as done but counts none of them in its rate (which gave 'about 20s left' for two hours)."""
    import minicount.study.run as sweep

    base = Cell(n_heads=2, max_len=5, d_model=8, d_head=4, steps=20)
    spec = SweepSpec(cells=(base, replace(base, steps=40)), names=("a", "b"), seeds=(0, 1),
                     batch_size=8, n_eval=16, first_snapshot=10)  # fmt: skip
    run_sweep(spec, tmp_path, progress=False, figures=False)
    bars = []

    class Recorder(sweep.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(sweep, "Progress", Recorder)
    run_sweep(spec, tmp_path, progress=True, figures=False)
    (bar,) = bars
    assert bar.done == bar.total == 40 and bar.done - bar.start == 0


def test_fused_kernel_option_is_saved_with_each_cell(tmp_path):
    """--fused-kernel reaches the training of every cell as TrainConfig.path (on the CPU the
    fused path hands attention to the fast one), and each cell's checkpoint records it."""

    args = ["sweep", "--set", "n_heads=1", "--steps", "10", *TINY_SWEEP, "--no-figures"]
    assert main(args + ["--fused-kernel", "--out", str(tmp_path)]) == 0
    (ck,) = (tmp_path / "cells").glob("*/model.npz")
    assert mc.load_checkpoint(ck)["info"]["train"]["path"] == "fused"


def test_a_cosine_cell_trained_snapshot_by_snapshot_is_one_cosine_over_its_steps(tmp_path):
    # the sweep trains in segments (one per snapshot); the learning rate must still follow one
    # cosine over the cell's whole length, so the last parameters equal a single cosine run's
    cell = Cell(n_heads=2, max_len=4, d_model=8, d_head=4, steps=24, schedule="cosine")
    spec = SweepSpec(cells=(cell,), names=("cos",), seeds=(3, 4), batch_size=8, n_eval=16,
                     first_snapshot=6, interventions=False)  # fmt: skip
    run_sweep(spec, tmp_path, progress=False, figures=False)
    kept = tmp_path / "cells" / cell.key() / "snapshots"
    assert sorted(p.name for p in kept.glob("*.npz")) == [f"step_{s:07d}.npz" for s in (6, 12, 24)]
    whole, _ = mc.train(cell.model_config(), seed=[3, 4], steps=24, batch_size=8, max_len=4,
                        schedule="cosine", eval_every=0, n_eval=16)  # fmt: skip
    constant, _ = mc.train(cell.model_config(), seed=[3, 4], steps=24, batch_size=8, max_len=4,
                           eval_every=0, n_eval=16)  # fmt: skip
    last = mc.checkpoint.load_checkpoint(kept / "step_0000024.npz")["params"]
    for name in whole:
        assert (last[name] == whole[name]).all(), name
    assert any((last[n] != constant[n]).any() for n in whole)  # the schedule did act


def test_a_cosine_cell_does_not_continue_a_shorter_twin():
    from minicount.study.run import reused_steps

    short, long = (Cell(steps=s, schedule="cosine") for s in (10, 20))
    spec = SweepSpec(cells=(short, long), names=("a", "b"), seeds=(0,))
    assert reused_steps(spec) == [0, 0]
    flat = SweepSpec(cells=tuple(replace(c, schedule="constant") for c in (short, long)),
                     names=("a", "b"), seeds=(0,))  # fmt: skip
    assert reused_steps(flat) == [0, 10]


def test_extra_snapshots_every_n_steps():
    assert snapshot_steps(100, 25, every=30) == [25, 30, 50, 60, 90, 100]
    assert SweepSpec(
        cells=(Cell(steps=100),), names=("a",), seeds=(0,), first_snapshot=40, snapshot_every=50
    ).snapshots(Cell(steps=100)) == [40, 50, 80, 100]


def test_reanalysis_from_kept_parameters_gives_the_same_tables(tmp_path):
    from minicount.study.run import reanalyze

    assert main(["sweep", *TINY_SWEEP, "--steps", "20", "--no-figures", "--out",
                 str(tmp_path)]) == 0  # fmt: skip
    before = {n: read_csv(tmp_path / n) for n in ("models.csv", "heads.csv")}
    cell_dir = next((tmp_path / "cells").iterdir())
    for snap in cell_dir.glob("step_*.json"):  # damage the rows: reanalysis must rebuild them
        data = json.loads(snap.read_text())
        for row in data["models"]:
            row["l_acc"] = -1.0
        snap.write_text(json.dumps(data))
    reanalyze(tmp_path, progress=False, figures=False)
    for name, rows in before.items():
        assert read_csv(tmp_path / name) == rows, name
    with pytest.raises(ValueError, match="holds no minicount sweep"):
        reanalyze(tmp_path / "cells", progress=False)


def test_train_only_then_reanalyze_equals_a_full_sweep(tmp_path):
    # the GPU workflow: train (and keep the parameters) on one machine, analyse on another
    common = ["sweep", *TINY_SWEEP, "--steps", "20", "--set", "schedule=cosine", "--no-figures"]
    assert main(common + ["--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--train-only", "--out", str(tmp_path / "split")]) == 0
    assert not (tmp_path / "split" / "models.csv").exists()
    assert not list((tmp_path / "split" / "cells").glob("*/step_*.json"))
    assert main(["sweep", "--reanalyze", str(tmp_path / "split"), "--quiet", "--no-figures"]) == 0
    for name in ("models.csv", "heads.csv"):
        assert read_csv(tmp_path / "split" / name) == read_csv(tmp_path / "full" / name), name
    assert (tmp_path / "split" / COMPLETE).exists()
