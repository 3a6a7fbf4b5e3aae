"""Hypothesis profiles, the GPU probe, and fixtures that several test modules share."""

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minicount as mc
from minicount.cli import main
from minicount.data import DataConfig, eval_set

from .helpers import SHORT_RUN, TINY

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# CI (CI=true) replays the same examples every run; locally each run draws new ones
settings.load_profile("ci" if os.environ.get("CI") else "default")


def gpu_ok() -> bool:
    from minicount.backend import gpu_available

    return gpu_available()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked slurm run only when asked for (-m slurm): they need a running Slurm."""
    if "slurm" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: python -m pytest -m slurm (needs a running Slurm)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


# a checkpoint of a short run (test_checkpoint, test_cli, test_safeio), and its zip members


@pytest.fixture(scope="module")
def run_dir():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.npz"
        mc.train(TINY, checkpoint=path, **SHORT_RUN)
        yield Path(folder)


@pytest.fixture(scope="module")
def members(run_dir):
    with zipfile.ZipFile(run_dir / "good.npz") as z:
        return {n: z.read(n) for n in z.namelist()}


# the quick reproduce preset's output folder (test_study, test_report): one run a session
@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


# the held-out strings the designed models are tested on (tests/designed.py)
@pytest.fixture(scope="module")
def held_out():
    return eval_set(DataConfig(max_len=12, n_eval=200))
