"""Size limits (minicount/limits.py): huge requests refused before anything is allocated, and
the memory estimate an upper bound of a real run."""

import time

import pytest

import minicount as mc
from minicount import limits

from .helpers import TINY, one_error_line, run_cli


def test_huge_requests_are_refused_before_allocating(tmp_path, monkeypatch):
    start = time.perf_counter()
    code, _, err = run_cli(["train", "--seeds", "0-100000000", "--out", tmp_path / "x"])
    assert code == 2 and f"limit of {limits.MAX_ENSEMBLE}" in err
    code, _, err = run_cli(["train", "--batch-size", str(10**9), "--out", tmp_path / "x"])
    assert code == 2
    one_error_line(err, "memory", "over the limit")
    with pytest.raises(ValueError, match="over the limit"):
        mc.train(TINY, seed=list(range(limits.MAX_ENSEMBLE + 1)))
    with pytest.raises(ValueError, match="over the limit"):
        mc.ModelConfig(d_model=2**20, n_heads=64, d_head=64)
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", str(2**20))  # 1 MiB: even the default run
    with pytest.raises(ValueError, match="over the limit of 0.000977 GiB"):
        mc.train(TINY, steps=1)
    code, _, err = run_cli(["eval", tmp_path / "missing.npz"])
    assert code == 2
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.iterdir())


def test_the_memory_estimate_bounds_a_real_run():
    """The estimate is from above: a run's measured peak (tracemalloc) stays below it."""
    import tracemalloc

    config, kw = mc.ModelConfig(), dict(steps=2, batch_size=64, max_len=16, n_eval=256)
    estimate = limits.training_bytes(config, 3, 64, 17, 256)
    tracemalloc.start()
    mc.train(config, seed=[0, 1, 2], **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < estimate < 50 * peak
