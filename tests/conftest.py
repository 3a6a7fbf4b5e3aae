import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
