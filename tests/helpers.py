"""What several test modules share: the tiny model and its runs, comparisons of parameters
and histories, the command line run in process, and checkpoint files built member by member."""

import contextlib
import csv
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

import minicount as mc
from minicount.cli import main

train_module = sys.modules["minicount.train"]  # (minicount.train is also the train function)

ROOT = Path(__file__).resolve().parents[1]
TINY = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
# every option that changes the trajectory is off its default, so resume must restore them all
RUN = dict(steps=24, batch_size=8, max_len=6, eval_every=8, n_eval=32, lr=1e-2, warmup=3,
           schedule="cosine", weight_decay=0.01, grad_clip=0.5)  # fmt: skip
# a short run, for a checkpoint to damage or to write through
SHORT_RUN = dict(steps=4, batch_size=4, max_len=4, n_eval=16, eval_every=2)
# a sweep's options for tiny cells
TINY_SWEEP = ["--set", "max_len=5", "--set", "d_model=8", "--set", "d_head=4", "--batch-size", "16",
        "--n-eval", "24", "--first-snapshot", "10", "--seeds", "0-2", "--quiet"]  # fmt: skip


def same_history(a, b):
    """Histories equal in everything but wall-clock times."""
    assert a["step"] == b["step"] and a["loss"] == b["loss"]
    strip = [[{k: v for k, v in e.items() if k != "time"} for e in h["eval"]] for h in (a, b)]
    assert strip[0] == strip[1]


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@contextlib.contextmanager
def inside(folder):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def npy_bytes(a) -> bytes:
    f = io.BytesIO()
    np.save(f, np.asarray(a), allow_pickle=False)
    return f.getvalue()


def write_zip(path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    """A zip of {name: bytes}, as np.savez lays one out."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return Path(path)


def run_cli(argv):
    """(exit code, stdout, stderr) of main(argv), in process."""
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(x) for x in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))
