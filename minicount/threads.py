"""The CPU threads minicount may use, and one shared pool per thread count.

NumPy releases the GIL inside array operations (and numpy.random inside its bulk draws),
so a thread pool can run array work on several cores. Whether that pays depends on the
machine: on a 2-vCPU cloud machine (two hyperthreads of one core) a second thread made a
training step slower (14.1 ms against 10.8 ms on one). So the default is measured, not
assumed: the first time a training step (or the analysis) needs it on a machine,
``measure_threads`` times a training forward+backward of the default model on 1 thread and
on more (about a second), keeps the fastest count only if it beats one thread by MARGIN
(20%), and caches the answer in ``~/.cache/minicount/threads.json`` (``$XDG_CACHE_HOME`` is
honoured), keyed by the CPU, the usable cores and the NumPy version. On a machine busy
with other work (more than BUSY threads of other processes running per core, before or
during the measurement) a measurement would say more about the load than about the
machine, so none is kept: that process uses one thread, and a later one measures.

What is timed is passed in (``make_timer``: fast.train_step.training_step_timer for the
training step and the analysis), so this module imports nothing of minicount. A caller
that passes no timer (drawing a batch of data) never measures: it gets the known answer,
or one thread while there is none.

Overrides: MINICOUNT_THREADS=N (MINICOUNT_THREADS=1 on a machine shared with other busy
programs, where threads that wait for each other's turn on a core lose more than they
gain); delete the cache file, or call ``measure_threads(refresh=True, make_timer=...)``, to
measure again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_blas: list = []  # [threadpoolctl controller] once looked up (empty: not yet, [None]: absent)
_measured: dict[str, int] = {}  # this process's answer, per machine key
_unknown: set[str] = set()  # machine keys whose cache was read and held no answer

MARGIN = 0.8  # more threads must take at most 80% of one thread's time to be chosen
BUSY = 0.25  # other processes' running threads per usable core above which none is measured
ROUNDS = 9  # timed rounds per thread count (after one warm-up), interleaved


def usable_cores() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(make_timer=None) -> int:
    """MINICOUNT_THREADS if set; else 1 on one core; else the measured best (cached), measured
    with make_timer when no answer is known yet; 1 while none is known and no timer is given.

    make_timer: a function () -> (n_threads -> seconds of the work to tune for), such as
    fast.train_step.training_step_timer."""
    if os.environ.get("MINICOUNT_THREADS"):
        value = os.environ["MINICOUNT_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MINICOUNT_THREADS must be a whole number >= 1, got {value!r}")
        return int(value)
    if usable_cores() == 1:
        return 1
    if make_timer is None:
        known = known_threads()
        return 1 if known is None else known
    return measure_threads(make_timer=make_timer)


def analysis_threads() -> int:
    """Threads for independent pieces of analysis (minicount.analysis.analyze_ensemble):
    MINICOUNT_THREADS if set, else every usable core. Unlike a training step, whose threads
    split one small product and may gain nothing, these pieces share no work, so they scale
    with the cores (measured on 2 cores: 4.0 s on one thread, 2.3 s on two)."""
    if os.environ.get("MINICOUNT_THREADS"):
        return default_threads()
    return usable_cores()


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minicount" / "threads.json"


def machine_key() -> str:
    """What the answer depends on: the CPU model, the usable cores, NumPy's version."""
    return f"{cpu_name()} | {usable_cores()} cores | numpy {np.__version__}"


@functools.cache
def cpu_name() -> str:
    """The CPU's model name, read once per process: default_threads() runs at every training
    step, and reading /proc/cpuinfo there cost 0.4 ms of a 10 ms step."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _read_cache() -> dict:
    try:
        entries = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(key: str, entry: dict) -> None:
    """Add entry under key, atomically; a cache that cannot be written is only skipped."""
    path = cache_path()
    entries = _read_cache()
    entries[key] = entry
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        os.replace(tmp, path)


def candidates(cores: int) -> list[int]:
    """Thread counts worth timing: 1, 2, half the cores, all of them."""
    return sorted({1, min(2, cores), max(1, cores // 2), cores})


def load_per_core() -> float:
    """How busy the machine is now, without us: the threads of other processes that are
    running or waiting for a core, per usable core (read from /proc/<pid>/task/<tid>/stat;
    a few milliseconds). Where there is no /proc: the 1-minute load average per core, which
    also counts this process's own recent work; 0 where the OS says neither.

    Not the load average on Linux: it lags by minutes, so it counts a process that has just
    ended (the tests that ran before, a training run) and misses one that has just begun."""
    running = _running_elsewhere()
    if running is not None:
        return running / usable_cores()
    try:
        return os.getloadavg()[0] / usable_cores()
    except (AttributeError, OSError):
        return 0.0


def _running_elsewhere() -> int | None:
    """Threads of other processes in state R (running or runnable), or None without /proc."""
    me = os.getpid()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return None
    running = 0
    for pid in pids:
        with contextlib.suppress(OSError):  # (a process may end while it is read)
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read()
                    end = stat.rfind(b")")  # the state follows the name, which may hold ") "
                    running += stat[end + 2 : end + 3] == b"R"
    return running


def known_threads(key: str | None = None) -> int | None:
    """This machine's answer if one is known (this process's, or the cache file's), else None.
    The cache is read at most once per process while it holds no answer. key: machine_key()."""
    key = key or machine_key()
    if key in _measured:
        return _measured[key]
    if key in _unknown:
        return None
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and isinstance(entry.get("threads"), int):
        if entry["threads"] >= 1:
            _measured[key] = entry["threads"]
            return entry["threads"]
    _unknown.add(key)
    return None


def measure_threads(refresh: bool = False, *, make_timer) -> int:
    """The thread count for this machine: the known answer (``known_threads``), or a fresh
    measurement of the work that make_timer() times (a function n_threads -> seconds).

    Each candidate count is timed in interleaved rounds after a warm-up (so that a passing
    load hits all alike); the one with the lowest median wins if it takes at most MARGIN
    of one thread's median, else 1. The result and the medians are cached under
    machine_key(). On a busy machine (load_per_core() > BUSY) it returns 1 and neither
    measures nor caches; so too when other work ran during the measurement (the mean of
    load_per_core() sampled after each round above BUSY), whose timings would favour one
    thread on a machine that has two to spare.
    """
    key = machine_key()
    if not refresh:
        known = known_threads(key)
        if known is not None:
            return known
    if load_per_core() > BUSY:  # too busy to tell: one thread in this process, and a later
        _measured[key] = 1  # process measures (remembered, so that a step asks no file again)
        return 1
    counts = candidates(usable_cores())
    timer = make_timer()
    for n in counts:  # warm-up: the pools, the allocator, the caches
        timer(n)
    times = {n: [] for n in counts}
    load = []  # sampled after every round: other work may start while we measure
    for _ in range(ROUNDS):
        for n in counts:
            times[n].append(timer(n))
        load.append(load_per_core())
    if sum(load) / len(load) > BUSY:  # the measurement met other work: keep nothing of it
        _measured[key] = 1
        return 1
    median = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    best = min(median, key=median.get)
    chosen = best if median[best] <= MARGIN * median[1] else 1
    _measured[key] = chosen
    _unknown.discard(key)
    _write_cache(
        key,
        {
            "threads": chosen,
            "median_ms": {str(n): round(1e3 * t, 3) for n, t in median.items()},
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    return chosen


def pool(n_threads: int, role: str = "train") -> ThreadPoolExecutor:
    """The pool of n_threads worker threads for ``role``, made once and reused: "train" (the
    training step's slices, drawing the members' batches) or "analysis" (the pieces of
    analyze_ensemble). The one place pools are made.

    Each role keeps its own threads on purpose: a thread keeps its own malloc arena, and
    the analysis ran 4% slower on threads that had trained (1.92 s against 1.84 s for 8
    models on 2 cores, five alternating runs each), as a sweep does between snapshots.
    Tasks must not wait on tasks of the same pool (none does: each caller submits from its
    own thread and waits there)."""
    if role not in ("train", "analysis"):
        raise ValueError(f"role must be 'train' or 'analysis', got {role!r}")
    key = (role, n_threads)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(n_threads, thread_name_prefix=f"minicount-{role}")
    return _pools[key]


def blas_limit(n: int | None = 1):
    """The one BLAS limiter: a context in which BLAS runs on at most n threads (n None, or no
    threadpoolctl: a no-op).

    n = 1 for stacks of small or skinny matrices: OpenBLAS splits even a [9, N] @ [N, 9]
    product over its threads, and their hand-offs cost more than the product (several times
    more on a busy machine). A sweep holds BLAS to its thread budget for its whole run. The
    threadpoolctl controller is looked up once per process; limits nest (each restores what
    it found)."""
    if not _blas:
        try:
            from threadpoolctl import ThreadpoolController  # (may be absent: then a no-op)

            _blas.append(ThreadpoolController())
        except ImportError:
            _blas.append(None)
    controller = _blas[0]
    if n is None or controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=n, user_api="blas")
