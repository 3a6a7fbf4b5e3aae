"""threads: the default thread count is measured once per machine, cached, and never
worse than one thread."""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minicount import threads
from minicount.fast.train_step import TIMED_BATCH, training_step_timer
from minicount.train import TrainConfig


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache folder, no MINICOUNT_THREADS, 4 usable cores, nothing remembered."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MINICOUNT_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "_unknown", set())
    monkeypatch.setattr(threads, "load_per_core", lambda: 0.0)
    return tmp_path


def timer_from(ms_per_count, calls=None):
    """A make_timer whose timer says ms_per_count[n] milliseconds for n threads."""

    def make():
        def seconds(n):
            if calls is not None:
                calls.append(n)
            return ms_per_count[n] / 1e3

        return seconds

    return make


def test_more_threads_are_chosen_only_when_they_pay(fresh):
    assert threads.candidates(4) == [1, 2, 4]
    faster = timer_from({1: 10.0, 2: 6.0, 4: 5.0})
    assert threads.measure_threads(refresh=True, make_timer=faster) == 4
    barely = timer_from({1: 10.0, 2: 8.5, 4: 9.8})  # within the 20% margin: not worth it
    assert threads.measure_threads(refresh=True, make_timer=barely) == 1
    slower = timer_from({1: 10.8, 2: 14.1, 4: 15.0})  # the 2-vCPU machine
    assert threads.measure_threads(refresh=True, make_timer=slower) == 1


def test_the_answer_is_cached_per_machine_and_read_back(fresh, monkeypatch):
    calls = []
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 5, 4: 8}, calls)) == 2
    assert calls, "it measured"
    entry = json.loads(threads.cache_path().read_text())[threads.machine_key()]
    assert entry["threads"] == 2 and entry["median_ms"] == {"1": 10.0, "2": 5.0, "4": 8.0}
    assert threads.cache_path() == fresh / "minicount" / "threads.json"
    monkeypatch.setattr(threads, "_measured", {})  # a new process: read from the file
    calls.clear()
    assert threads.default_threads() == 2 and not calls
    monkeypatch.setattr(threads, "machine_key", lambda: "another machine")
    assert threads.measure_threads(make_timer=timer_from({1: 1, 2: 5, 4: 8}, calls)) == 1
    assert calls


def test_without_a_timer_nothing_is_measured(fresh):
    """Drawing data passes no timer: one thread while nothing is known, the cached answer
    once a training step has measured it; the cache is read once while it holds nothing."""
    assert threads.default_threads() == 1 and not threads.cache_path().exists()
    assert threads.default_threads(timer_from({1: 10, 2: 5, 4: 8})) == 2
    assert threads.default_threads() == 2


def test_environment_and_one_core_need_no_measurement(fresh, monkeypatch):
    def no_timer():
        raise AssertionError("should not measure")

    monkeypatch.setenv("MINICOUNT_THREADS", "3")
    assert threads.default_threads(no_timer) == 3
    monkeypatch.delenv("MINICOUNT_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.default_threads(no_timer) == 1


def test_a_broken_or_unwritable_cache_is_not_an_error(fresh, monkeypatch):
    path = threads.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 10, 4: 10})) == 1
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh / "file"))
    (fresh / "file").write_text("a file where the cache folder would go")
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 4, 4: 10})) == 2


def test_the_real_timer_runs_a_default_training_step():
    assert TIMED_BATCH == TrainConfig().batch_size
    seconds = training_step_timer()
    assert 0 < seconds(1) < 10


def test_a_busy_machine_is_not_measured(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "load_per_core", lambda: 1.5)
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 2, 4: 2}, calls)) == 1
    assert not calls and not threads.cache_path().exists()
    monkeypatch.setattr(threads, "load_per_core", lambda: 0.0)  # quiet again, but this
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 2, 4: 2}, calls)) == 1
    assert not calls  # process keeps its one thread; a later process measures:
    monkeypatch.setattr(threads, "_measured", {})
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 2, 4: 2}, calls)) == 2


def test_work_that_starts_during_the_measurement_leaves_no_answer(fresh, monkeypatch):
    """Quiet when the measurement starts, busy while it runs: its timings favour one thread
    on a machine that has two to spare, so nothing is cached and this process uses one."""
    samples = iter([0.0] + [1.0] * 50)  # the check before it, then one per round
    monkeypatch.setattr(threads, "load_per_core", lambda: next(samples))
    calls = []
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 2, 4: 2}, calls)) == 1
    assert calls and not threads.cache_path().exists()  # it did measure, and kept nothing
    monkeypatch.setattr(threads, "_measured", {})
    monkeypatch.setattr(threads, "load_per_core", lambda: 0.0)  # a later, quiet process:
    assert threads.measure_threads(make_timer=timer_from({1: 10, 2: 2, 4: 2})) == 2
    assert json.loads(threads.cache_path().read_text())[threads.machine_key()]["threads"] == 2


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_the_load_counts_other_running_work_now_and_not_our_own():
    """A process spinning on a core is seen at once (the 1-minute load average would take
    a minute); this process's own threads are never counted."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seen = []
        for _ in range(50):
            seen.append(threads._running_elsewhere())
            if seen[-1] >= 1:
                break
            time.sleep(0.02)
        assert max(seen) >= 1
    finally:
        spinner.kill()
        spinner.wait()
    before = min(threads._running_elsewhere() for _ in range(10))  # others' work, if any
    busy = threading.Event()
    done = threading.Event()

    def spin():  # a thread of ours, running (in BLAS, which lets the GIL go)
        a = np.ones((400, 400))
        busy.set()
        while not done.is_set():
            a @ a

    t = threading.Thread(target=spin)
    t.start()
    try:
        busy.wait()
        during = min(threads._running_elsewhere() for _ in range(10))
    finally:
        done.set()
        t.join()
    assert during <= before  # our spinning thread is not counted


def test_the_thread_default_reads_no_file_once_known(monkeypatch):
    """default_threads() runs at every training step: once the answer is known, asking again
    must not read /proc/cpuinfo or the cache file (two reads per step cost 4-8% of a step)."""
    monkeypatch.delenv("MINICOUNT_THREADS", raising=False)
    threads.default_threads(training_step_timer)  # as the training step asks
    reads = []
    real = threads.Path.read_text
    monkeypatch.setattr(
        threads.Path, "read_text", lambda self, *a, **k: reads.append(self) or real(self, *a, **k)
    )
    for _ in range(5):
        threads.default_threads(training_step_timer)
        threads.default_threads()  # as drawing a batch asks
    assert reads == []


def test_the_analysis_uses_every_core_unless_told(monkeypatch):
    # independent pieces of work: no training-step measurement decides their thread count
    from minicount import threads

    monkeypatch.delenv("MINICOUNT_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    monkeypatch.setattr(threads, "measure_threads", lambda *a, **k: pytest.fail("measured"))
    assert threads.analysis_threads() == 6
    monkeypatch.setenv("MINICOUNT_THREADS", "3")
    assert threads.analysis_threads() == 3


def test_one_pool_and_one_blas_limiter_serve_every_caller():
    """Pools are made in one place, one per role (the analysis's threads apart from the
    training's), and blas_limit nests: each limit restores what it found."""
    from minicount.analysis.ensemble import _Work

    assert _Work(3).executor is threads.pool(3, "analysis") is threads.pool(3, "analysis")
    assert threads.pool(3) is threads.pool(3, "train") is not threads.pool(3, "analysis")
    with pytest.raises(ValueError, match="role"):
        threads.pool(2, "plotting")
    assert _Work(1).executor is None  # one thread: the pieces run in turn
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return {
            d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"
        }

    outside = blas()
    with threads.blas_limit(2):
        inside = blas()
        assert inside <= {1, 2}
        with threads.blas_limit(1):
            assert blas() == {1}
        assert blas() == inside
    with threads.blas_limit(None):
        assert blas() == outside
    assert blas() == outside
