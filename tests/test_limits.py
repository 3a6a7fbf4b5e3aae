"""Size limits (minicount/limits.py): huge requests refused before anything is allocated, and
the memory estimate an upper bound of a real run."""

import sys
import time
import types

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


@pytest.fixture
def gpu_of(monkeypatch):
    """A stand-in CuPy whose one GPU has ``total`` bytes (``free`` of them free): the GPU
    path of the memory rule, run without a GPU."""

    def install(total: int, free: int):
        runtime = types.SimpleNamespace(memGetInfo=lambda: (free, total))
        monkeypatch.setitem(
            sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
        )

    return install


def test_on_the_gpu_the_rule_is_the_devices_total_memory(gpu_of, monkeypatch):
    config, members, batch, length, n_eval = mc.ModelConfig(), 16, 256, 33, 1024
    need = limits.training_bytes(config, members, batch, length, n_eval)
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", "1")  # the host's budget: not the GPU's
    gpu_of(total=need, free=need // 10)  # the total counts, not what is free right now
    assert limits.memory_limit("gpu") == need
    assert limits.fits(config, members, batch, length, "gpu", n_eval=n_eval)
    assert not limits.fits(config, members, batch, length, "cpu", n_eval=n_eval)
    gpu_of(total=need - 1, free=need - 1)
    assert not limits.fits(config, members, batch, length, "gpu", n_eval=n_eval)


def test_a_sweep_and_a_run_too_big_for_the_gpu_are_refused_in_one_line(gpu_of):
    from minicount.study.run import check_sweep
    from minicount.study.spec import Cell, SweepSpec
    from minicount.train import TrainConfig, check_training_memory

    gpu_of(total=2**30, free=2**30)  # 1 GiB
    spec = SweepSpec(cells=(Cell(),), names=("big",), seeds=tuple(range(1024)))
    with pytest.raises(ValueError, match=r"cell 'big' with 1024 seeds .* more than the 1\.0 GiB"):
        check_sweep(spec, "gpu")
    check_sweep(SweepSpec(cells=(Cell(),), names=("small",), seeds=(0, 1)), "gpu")
    tc = TrainConfig(seeds=tuple(range(1024)))
    with pytest.raises(ValueError, match=r"over the limit of 1 GiB \(the GPU's memory\)"):
        check_training_memory(mc.ModelConfig(), tc, "gpu")
