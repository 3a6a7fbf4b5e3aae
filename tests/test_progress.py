"""Progress as its reader sees it: a tqdm bar in a terminal, plain lines in a pipe or a log."""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios

import pytest

import minicount as mc
from minicount.progress import Progress
from minicount.study.run import run_sweep
from minicount.study.spec import Cell, SweepSpec


def test_plain_lines_say_count_rate_and_time_left():
    out = io.StringIO()
    bar = Progress(10, unit="step", desc="train", stream=out, tty=False, every_s=0)
    for _ in range(4):
        bar.advance(1)
    bar.line("an evaluation")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "\r" not in out.getvalue()
    assert "train: 4/10 steps" in lines[3] and "steps/s" in lines[3] and "left)" in lines[3]
    assert lines[4].endswith("s left)") and "an evaluation" in lines[4]


def test_plain_lines_wait_for_their_interval():
    out = io.StringIO()
    bar = Progress(1000, stream=out, tty=False, every_s=3600)
    for _ in range(1000):
        bar.advance(1)
    assert out.getvalue() == ""  # nothing to say within the hour; the eval lines speak


def test_a_terminal_gets_a_bar_with_rate():
    out = io.StringIO()
    with Progress(20, unit="step", desc="cell", stream=out, tty=True) as bar:
        bar.advance(20)
    text = out.getvalue()
    assert "\r" in text and "20/20" in text and "step/s" in text and "cell" in text


def test_work_done_before_stays_out_of_the_rate(monkeypatch):
    """A resumed run shows its earlier steps as done, but its estimate comes from the steps
    this process trains: 2 steps in 10 s with 8 to go is 40 s left, not 1 s."""
    clock = iter([0.0, 0.0, 10.0, 10.0])
    monkeypatch.setattr("minicount.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = Progress(100, stream=out, tty=False, every_s=3600)  # t0 = 0
    bar.skip_to(90)
    bar.advance(2)
    assert bar.eta() == " (about 40s left)"  # (reads the clock at 10 s)


def test_a_terminal_bar_leaves_work_done_before_out_of_its_rate():
    with Progress(100, stream=io.StringIO(), tty=True) as bar:
        bar.skip_to(90)
        bar.advance(2)
        shown = bar.bar.format_dict
        assert shown["n"] == 92 and shown["n"] - shown["initial"] == 2


def test_a_disabled_progress_prints_nothing():
    out = io.StringIO()
    bar = Progress(5, stream=out, tty=True, enabled=False)
    bar.advance(5)
    bar.line("hidden")
    bar.close()
    assert out.getvalue() == ""


def test_training_advances_a_callers_progress_step_by_step():
    out = io.StringIO()
    bar = Progress(12, stream=out, tty=False, every_s=0)
    config = mc.ModelConfig(n_heads=1, d_model=8, d_head=4)
    mc.train(config, steps=12, batch_size=8, max_len=4, n_eval=16, eval_every=0, progress=bar)
    lines = out.getvalue().splitlines()
    assert [line.split("] ")[1].split(" ")[0] for line in lines] == [
        f"{k}/12" for k in range(1, 13)
    ]


def test_sweep_lines_name_each_cell_and_the_steps_it_reached(capsys):
    cell = Cell(n_heads=2, max_len=4, d_model=8, d_head=4, steps=12)
    other = Cell(n_heads=1, max_len=4, d_model=8, d_head=4, steps=12)
    spec = SweepSpec(cells=(cell, other), names=("a", "b"), seeds=(0, 1), batch_size=8,
                     n_eval=16, first_snapshot=6)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run_sweep(spec, tmp, progress=True, figures=False)
    err = capsys.readouterr().err
    assert "[1/2] a: step 12/12" in err and "[2/2] b: step 6/12" in err
    assert "left)" in err  # an estimate while work remains


def _run(argv, *, terminal: bool, cwd) -> str:
    """stderr+stdout of ``python -m minicount argv`` in a pseudo-terminal or a pipe."""
    cmd = [sys.executable, "-m", "minicount", *argv]
    env = {**os.environ, "COLUMNS": "100"}
    if not terminal:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        return done.stderr + done.stdout
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24x100
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=secondary, stdout=secondary,
                            stderr=secondary, close_fds=True)  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(primary)
    return b"".join(chunks).decode(errors="replace")


TRAIN = ["train", "--steps", "40", "--eval-every", "20", "--n-eval", "32", "--batch-size", "16",
         "--max-len", "8", "--n-heads", "1", "--d-model", "8", "--d-head", "4"]  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_train_shows_a_bar_in_a_terminal_and_lines_in_a_pipe(tmp_path):
    in_terminal = _run([*TRAIN, "--out", "a.npz"], terminal=True, cwd=tmp_path)
    assert (
        "\r" in in_terminal.replace("\r\n", "\n")
        and "40/40" in in_terminal
        and "step/s" in in_terminal
    )
    assert "step     20/40" in in_terminal  # the evaluation lines are kept above the bar
    in_pipe = _run([*TRAIN, "--out", "b.npz"], terminal=False, cwd=tmp_path)
    assert "\r" not in in_pipe
    assert "step     20/40" in in_pipe and "mean" not in in_pipe  # one model: no mean/min
    assert all(line.startswith("[") for line in in_pipe.splitlines() if "step " in line)


@pytest.mark.parametrize("interventions", [True, False])
def test_an_analysis_counts_every_piece_of_its_work(interventions, monkeypatch):
    from minicount.analysis import analyze_ensemble

    monkeypatch.setenv("MINICOUNT_THREADS", "2")  # two groups of models
    config = mc.ModelConfig(n_heads=2, d_model=8, d_head=4)
    params = mc.init_ensemble(config, [0, 1, 2])
    held_out = mc.data.eval_set(mc.data.DataConfig(max_len=6, n_eval=24))
    out = io.StringIO()
    seen = []
    bar = Progress(0, unit="piece", stream=out, tty=False, every_s=0)
    bar.describe = lambda desc: seen.append(desc)  # what the analysis says it is doing
    analyze_ensemble(params, *held_out, config, interventions=interventions, progress=bar)
    assert bar.done == bar.total == 4 + 2 * (4 if interventions else 3)
    assert seen[0] == "analysis: the forward pass" and len(seen) == bar.total
    assert ("analysis: interventions" in seen) == interventions
    assert out.getvalue().count("\n") == bar.total  # one plain line per piece (every_s=0)


def test_analyze_shows_a_bar_in_a_terminal_and_stays_quiet_in_a_pipe(tmp_path):
    config = mc.ModelConfig(n_heads=2, d_model=8, d_head=4)
    mc.save(tmp_path / "m.npz", mc.init_ensemble(config, [0, 1]), config)
    argv = ["analyze", "m.npz", "--n-eval", "16", "--max-len", "6", "--json"]
    in_terminal = _run(argv, terminal=True, cwd=tmp_path)
    assert "analysis" in in_terminal and "piece/s" in in_terminal
    in_pipe = _run(argv, terminal=False, cwd=tmp_path)
    assert "piece" not in in_pipe and in_pipe.lstrip().startswith("{")  # JSON only
