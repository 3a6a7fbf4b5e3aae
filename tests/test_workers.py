"""Many worker processes on one sweep folder (minicount/study/workers.py): N = 2 fixed shares and
N = 4 claiming workers, one of them SIGKILLed in the middle of a cell, give the tables of a
single-process sweep; no cell is trained by two workers at once; bad requests are refused in
one line; --status and --report-only read any sweep folder. The job array on a real Slurm is
test_slurm_job_array (opt-in: -m slurm)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minicount.cli import main
from minicount.safeio import exclusive_lock, lock_is_held, shared_lock
from minicount.study.run import COMPLETE, LOG, read_log, read_spec
from minicount.study.spec import Cell, SweepSpec
from minicount.study.workers import is_done, parse_worker, shares

from .helpers import ROOT, read_csv

# 8 tiny cells in 4 chains of twins (the 80-step cell continues from the 40-step one)
SWEEP = ["sweep", "--set", "n_heads=1,2", "--set", "bos=on,off", "--set", "steps=40,80",
         "--set", "max_len=5", "--set", "d_model=8", "--set", "d_head=4", "--batch-size", "16",
         "--n-eval", "24", "--first-snapshot", "10", "--seeds", "0-2", "--no-figures"]  # fmt: skip
# what differs between two runs of the same sweep: when, by which command, how long it took
VARIES = ("command", "finished", "seconds", "reanalyzed")


def same_results(a: Path, b: Path) -> None:
    for name in ("models.csv", "heads.csv"):
        assert read_csv(a / name) == read_csv(b / name), name
    ra, rb = (json.loads((f / "results.json").read_text()) for f in (a, b))
    for r in (ra, rb):
        for key in VARIES:
            r["meta"].pop(key, None)
    assert ra == rb


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The sweep run by one process, the usual way."""
    out = tmp_path_factory.mktemp("alone")
    assert main([*SWEEP, "--quiet", "--out", out]) == 0
    return out


def start(out: Path, *extra: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "minicount", *SWEEP, "--out", str(out), *extra]
    with open(log, "w") as f:
        return subprocess.Popen(argv, stderr=f, stdout=subprocess.DEVNULL, cwd=ROOT)


def kill_mid_cell(out: Path, victims: list[subprocess.Popen], timeout: float = 120) -> tuple:
    """SIGKILL one of the victims while it holds a cell whose first snapshot and checkpoint are
    on disk and whose last is not: (its pid, the cell's folder). The victim is stopped
    (SIGSTOP) while the cell is checked, so it cannot finish the cell in between."""
    pids = {p.pid: p for p in victims}
    deadline = time.time() + timeout
    while time.time() < deadline:
        for beat in out.glob("cells/*/progress.json"):
            folder = beat.parent
            try:
                pid = json.loads(beat.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid not in pids or not (folder / "step_0000010.json").exists():
                continue
            os.kill(pid, signal.SIGSTOP)
            try:
                mid = json.loads(beat.read_text())["pid"] == pid
            except (OSError, ValueError, KeyError):
                mid = False
            if (mid and lock_is_held(folder) and (folder / "model.npz").exists()
                    and not (folder / "analysis.json").exists()):  # fmt: skip
                os.kill(pid, signal.SIGKILL)
                pids[pid].wait()
                return pid, folder
            os.kill(pid, signal.SIGCONT)
        assert all(p.poll() is None for p in victims), "a victim finished before the kill"
        time.sleep(0.005)
    raise AssertionError("no victim was caught in the middle of a cell")


def check_one_trainer_at_a_time(out: Path, killed: int, cut: Path) -> None:
    """Per cell, each worker's start is followed by its done (or stop) before the next start,
    except the killed worker's; the cell it was killed in was taken over and resumed from a
    step after 0; every cell was finished once."""
    spec = read_spec(out)
    for cell in spec.cells:
        folder = out / "cells" / cell.key()
        events = read_log(folder)
        holder = None
        for e in events:
            if e["event"] == "start":
                assert holder is None or holder == killed, f"{folder.name}: two holders at once"
                holder = e["pid"]
            else:
                assert e["pid"] == holder, f"{folder.name}: {e}"
                holder = None
        assert [e["event"] for e in events].count("done") == 1, folder.name
        starts = [e for e in events if e["event"] == "start"]
        if folder == cut:
            assert starts[0]["pid"] == killed and len(starts) == 2 and starts[1]["step"] > 0
        else:
            assert len(starts) == 1 and starts[0]["pid"] != killed


def writers_of_the_report(logs: list[Path]) -> int:
    return sum("writing tables" in log.read_text() for log in logs)


def test_two_workers_with_fixed_shares_one_killed_and_restarted(tmp_path, alone):
    out = tmp_path / "run"
    logs = [tmp_path / f"w{k}.log" for k in (1, 2, 3)]
    w1, w2 = (start(out, "--worker", f"{k}/2", log=logs[k - 1]) for k in (1, 2))
    killed, cut = kill_mid_cell(out, [w1])
    assert w2.wait(timeout=300) == 0
    assert not (out / COMPLETE).exists()  # worker 1's share is not done: no report yet
    code = subprocess.run([sys.executable, "-m", "minicount", "sweep", "--status", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert code.returncode == 0, code.stderr
    assert " done," in code.stdout and "resumes from step" in code.stdout
    assert f"pid {killed}, stopped" in code.stdout
    w1 = start(out, "--worker", "1/2", log=logs[2])  # the share's worker again (a requeue)
    assert w1.wait(timeout=300) == 0, logs[2].read_text()
    assert (out / COMPLETE).exists() and writers_of_the_report(logs) == 1
    check_one_trainer_at_a_time(out, killed, cut)
    same_results(out, alone)
    assert not list(out.rglob("*.tmp"))


def test_four_claiming_workers_one_killed_the_rest_finish(tmp_path, alone, capsys):
    out = tmp_path / "run"
    logs = [tmp_path / f"w{k}.log" for k in range(4)]
    workers = [start(out, "--claim", log=log) for log in logs]
    killed, cut = kill_mid_cell(out, workers)
    assert main(["sweep", "--status", out]) == 0  # while the others work
    text = capsys.readouterr().out
    assert "cell(s) x 3 seed(s):" in text and "time left:" in text
    for w, log in zip(workers, logs, strict=True):
        if w.pid != killed:
            assert w.wait(timeout=300) == 0, log.read_text()
    assert (out / COMPLETE).exists() and writers_of_the_report(logs) == 1
    check_one_trainer_at_a_time(out, killed, cut)
    same_results(out, alone)
    assert not list(out.rglob("*.tmp"))


def test_shares_keep_twins_together_and_cover_every_cell_once():
    base = Cell(n_heads=1, max_len=5, d_model=8, d_head=4, steps=10)
    cells = [base.__class__(**{**base.__dict__, "n_heads": h, "steps": s})
             for h in (1, 2, 4) for s in (10, 30, 90)]  # fmt: skip
    spec = SweepSpec(cells=tuple(cells), names=tuple(map(str, range(9))), seeds=(0,))
    for n in (1, 2, 3, 5):
        split = shares(spec, n)
        assert sorted(i for s in split for i in s) == list(range(9))
        for s in split:  # every chain of three twins whole in one share
            assert len(s) % 3 == 0 and all(cells[i].n_heads == cells[s[0]].n_heads for i in s[:3])
        assert split == shares(spec, n)
    assert parse_worker("2/4") == (2, 4)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--worker", "3/2"], "K must be between 1 and N"),
        (["--worker", "0/2"], "K must be between 1 and N"),
        (["--worker", "two"], "--worker takes K/N"),
        (["--worker", "1/2", "--claim"], "give one"),
    ],
)
def test_bad_worker_requests_fail_in_one_line(extra, words, tmp_path, capsys):
    assert main([*SWEEP, "--quiet", "--out", tmp_path / "o", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "cells").exists()


def test_status_and_report_only_on_a_folder(tmp_path, alone, capsys):
    assert main(["sweep", "--status", alone]) == 0
    text = capsys.readouterr().out
    assert "8 done, 0 running, 0 waiting, 0 left" in text and "complete since" in text
    for argv, words in (
        (["sweep", "--status", tmp_path], "holds no minicount sweep"),
        (["sweep", "--status", alone, "--set", "n_heads=2"], "takes no --set"),
        (["sweep", "--status", alone, "--report-only", alone], "give one"),
        (["sweep", "--report-only", alone, "--claim"], "takes no --claim"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    copy = tmp_path / "copy"
    shutil.copytree(alone, copy)
    spec = read_spec(copy)
    last = copy / "cells" / spec.cells[-1].key()
    (last / "step_0000080.json").unlink()  # one cell not done (killed before its last write)
    (last / "snapshots" / "step_0000080.npz").unlink(missing_ok=True)
    (copy / COMPLETE).unlink()
    assert not is_done(copy, spec, len(spec.cells) - 1)
    assert main(["sweep", "--report-only", copy, "--quiet"]) == 2
    assert "1 of 8 cell(s) not done" in capsys.readouterr().err
    assert main(["sweep", "--status", copy]) == 0
    text = capsys.readouterr().out
    assert "7 done, 0 running, 0 waiting, 1 left" in text and "resumes from step 80" in text
    assert "report: written by the worker that finishes the last cell" in text
    assert main([*SWEEP, "--quiet", "--claim", "--out", copy]) == 0  # a worker finishes it
    assert (copy / COMPLETE).exists() and LOG in {p.name for p in last.iterdir()}
    (copy / "report.md").unlink()
    command = json.loads((copy / "results.json").read_text())["meta"]["command"]
    assert main(["sweep", "--report-only", copy, "--quiet", "--no-figures"]) == 0
    assert (copy / "report.md").exists()
    # a rewritten report still names the command that ran the sweep, not the rewrite
    assert json.loads((copy / "results.json").read_text())["meta"]["command"] == command
    assert "--report-only" not in command
    same_results(copy, alone)


def test_workers_and_a_single_process_sweep_keep_out_of_each_other(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    with exclusive_lock(out, what="run folder"):  # a single-process sweep runs in it
        assert main([*SWEEP, "--quiet", "--claim", "--out", out]) == 2
        assert "a single-process sweep is running" in capsys.readouterr().err
    with shared_lock(out):  # a worker runs in it
        assert main([*SWEEP, "--quiet", "--out", out]) == 2
        assert "another minicount process is writing this run folder" in capsys.readouterr().err
    assert not (out / "cells").exists()


def _submit(argv: list, cwd: Path, env: dict) -> str:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _wait_for_jobs(ids: list[str], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode == 0 and not r.stdout.strip():
            return
        time.sleep(1)
    raise AssertionError(f"Slurm jobs {ids} still queued or running after {timeout} s")


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="Slurm is absent (no sbatch)")
def test_slurm_job_array(tmp_path, alone):
    """The job array on a real Slurm (docs/slurm.md sets one up on one machine): 3 claiming
    tasks through scripts/slurm_submit.sh, and 2 fixed-share tasks with the report step
    submitted by hand (the two-line recipe); both folders equal the single-process sweep."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    claim, split = tmp_path / "claim", tmp_path / "split"
    text = _submit([str(ROOT / "scripts" / "slurm_submit.sh"), "3", *SWEEP, "--out", str(claim)],
                   tmp_path, env)  # fmt: skip
    ids = [w.strip(",") for w in text.split() if w.strip(",").isdigit()]
    array = _submit(["sbatch", "--parsable", "--array=1-2", str(ROOT / "scripts" /
                     "slurm_sweep.sbatch"), *SWEEP, "--out", str(split)], tmp_path,
                    {**env, "MINICOUNT_SPLIT": "worker"}).strip()  # fmt: skip
    report = _submit(["sbatch", "--parsable", f"--dependency=afterany:{array}", "--wrap",
                      f"{sys.executable} -m minicount sweep --report-only {split} --no-figures"],
                     tmp_path, env).strip()  # fmt: skip
    assert len(ids) == 2, text
    _wait_for_jobs(ids + [array, report], timeout=900)
    outputs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
    for out, workers in ((claim, {"claim"}), (split, {"1/2", "2/2"})):
        assert (out / COMPLETE).exists(), outputs
        same_results(out, alone)
        spec = read_spec(out)
        seen = {e["worker"] for c in spec.cells for e in read_log(out / "cells" / c.key())}
        assert seen == workers
    assert "--worker 1/2" in outputs and "--worker 2/2" in outputs and "--claim" in outputs


def test_a_train_only_worker_then_reanalyze(tmp_path, alone, capsys):
    """--claim --train-only trains every cell and keeps its snapshots' parameters (no twin
    is continued: nothing is analysed to take over); --reanalyze then gives the tables."""
    out = tmp_path / "o"
    assert main([*SWEEP, "--quiet", "--claim", "--train-only", "--out", out]) == 0
    assert not (out / COMPLETE).exists()
    capsys.readouterr()
    assert main(["sweep", "--status", out]) == 0
    text = capsys.readouterr().out
    assert "0 done, 8 trained, 0 running" in text and "--reanalyze" in text
    assert main(["sweep", "--reanalyze", out, "--quiet", "--no-figures"]) == 0
    same_results(out, alone)
