"""The CPU threads minicount may use, and one shared pool per thread count.

NumPy releases the GIL inside array operations (and numpy.random inside its bulk draws),
so a thread pool runs array work on several cores. Set MINICOUNT_THREADS to cap the
threads (MINICOUNT_THREADS=1 on a machine shared with other busy programs, where
threads that wait for each other's turn on a core lose more than they gain).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

_pools: dict[int, ThreadPoolExecutor] = {}


def default_threads() -> int:
    """MINICOUNT_THREADS if set, else the number of cores this process may run on."""
    if os.environ.get("MINICOUNT_THREADS"):
        value = os.environ["MINICOUNT_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MINICOUNT_THREADS must be a whole number >= 1, got {value!r}")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool(n_threads: int) -> ThreadPoolExecutor:
    """A pool of n_threads worker threads, made once and reused."""
    if n_threads not in _pools:
        _pools[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="minicount")
    return _pools[n_threads]


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit BLAS to n threads while the study runs (small matrices: more threads mostly spin,
    and on a shared machine they slow everything down). A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        n = None
    if n is None:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield
