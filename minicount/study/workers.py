"""Many processes filling one sweep folder (minicount/study/run.py), on one machine or on many over
a shared file system, and what the folder says about them.

    python -m minicount sweep ... --worker K/N   the K-th of N fixed shares of the cells
    python -m minicount sweep ... --claim        the next free cell, again and again
    python -m minicount sweep --status DIR       done / running / waiting / left, time left
    python -m minicount sweep --report-only DIR  the report, once every cell is done

Shares (--worker): a cell and its shorter twins (the cells it continues from, see
run.donor) form a chain that always falls in one share, so a worker never waits for
another; chains go to the share with the fewest training steps so far, longest chain first.
A worker runs its share and exits. --claim takes, in the sweep's order, the first cell that
is not done, that no process holds and whose shorter twin is done; when every cell left is
held by another worker (or waits for such a twin) it waits, polling every POLL_S seconds,
so that the cell of a worker that died is taken over (it resumes from the cell's checkpoint:
on NumPy the numbers are those of an uninterrupted run); it exits when every cell is done.
Whichever worker finds every cell done writes the report (models.csv, heads.csv,
results.json, report.md, figures, COMPLETE), once.

Locks (flock, minicount/safeio.py; released by the kernel when the holder dies):

    DIR/.manifest.lock      held for the instant a process checks or writes sweep.json, so that
                            it is written once and every later worker is checked against it
    DIR/.lock               held shared by every worker (and --report-only) for its lifetime;
                            a single-process sweep holds it exclusively: the two never mix
    DIR/cells/<cell>/.lock  held by the worker training that cell
    DIR/.report.lock        held while the report is written

What a worker adds to a cell's folder (a single-process sweep adds neither):

    progress.json   the holder (host, pid, worker, device), its step and measured rate,
                    rewritten every BEAT_S seconds while it trains and at each snapshot
    workers.log     one JSON line per start, finish or stop of a worker on this cell
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import time
from dataclasses import replace
from pathlib import Path

from ..backend import resolve_device
from ..progress import Progress
from ..record import jsonable
from ..safeio import (
    TEMP_SUFFIX,
    OutputLocked,
    atomic_write,
    exclusive_lock,
    lock_is_held,
    remove_stale_temporaries,
    shared_lock,
)
from ..threads import blas_limit
from .rows import load_snapshots
from .run import (
    CHECKPOINT,
    COMPLETE,
    LOG,
    MANIFEST,
    SNAPSHOT,
    SNAPSHOTS,
    _checkpoint_step,
    _read_json,
    _run_reported,
    check_sweep,
    earlier_meta,
    prepare_folder,
    read_spec,
    write_report,
)
from .spec import SweepSpec

POLL_S = 1.0  # how often a waiting worker looks again
BEAT_S = 10.0  # how often a training worker rewrites its cell's progress.json
PROGRESS = "progress.json"


# ----------------------------------------------------------------------------- the cells


def parse_worker(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); ValueError in plain words otherwise."""
    k, sep, n = str(text).partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = None
    if not sep or k is None:
        raise ValueError(f"--worker takes K/N (this is worker K of N, 1 <= K <= N); got {text!r}")
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--worker {text}: K must be between 1 and N (N >= 1)")
    return k, n


def twin(spec: SweepSpec, i: int, analyse: bool = True) -> int | None:
    """The cell that cell i continues from: every knob equal, fewer steps, the longest such
    (run.donor's choice once it is done); None if there is none, if cell i does not
    continue a twin (a cosine schedule) or if nothing is analysed (train-only: a twin is
    taken over only once analysed)."""
    cell = spec.cells[i]
    if not analyse:
        return None
    shorter = [j for j, c in enumerate(spec.cells) if cell.continues_from(c)]
    return max(shorter, key=lambda j: spec.cells[j].steps) if shorter else None


def chains(spec: SweepSpec) -> list[list[int]]:
    """The cells grouped into chains of twins (equal but for steps), shortest first; chains
    in the order of their first cell."""
    groups: dict = {}
    for i, c in enumerate(spec.cells):
        groups.setdefault(replace(c, steps=1), []).append(i)
    return [sorted(g, key=lambda i: spec.cells[i].steps) for g in groups.values()]


def shares(spec: SweepSpec, n: int) -> list[list[int]]:
    """The cells of each of n workers (indices in the sweep's order): whole chains, the
    longest chain (in steps trained) first, each to the share with the fewest steps so far
    (the lowest-numbered on a tie). Deterministic: every worker computes the same split."""
    load, out = [0] * n, [[] for _ in range(n)]
    cost = lambda chain: max(spec.cells[i].steps for i in chain)  # noqa: E731
    for chain in sorted(chains(spec), key=lambda ch: (-cost(ch), ch[0])):
        k = min(range(n), key=lambda k: (load[k], k))
        load[k] += cost(chain)
        out[k].extend(chain)
    return [sorted(s) for s in out]


def cell_folder(out: Path, spec: SweepSpec, i: int) -> Path:
    return out / "cells" / spec.cells[i].key()


def is_done(out: Path, spec: SweepSpec, i: int, analyse: bool = True) -> bool:
    """Whether cell i is finished: its last snapshot (written last) is on disk; with
    analyse=False (train-only), or the kept parameters of its last step."""
    folder, last = cell_folder(out, spec, i), spec.cells[i].steps
    if (folder / SNAPSHOT.format(last)).exists():
        return True
    return not analyse and (folder / SNAPSHOTS / CHECKPOINT.format(last)).exists()


# ----------------------------------------------------------------------------- the folder


def _manifest_lock(out: Path):
    return exclusive_lock(out / ".manifest", what="sweep.json", timeout_s=120)


def _wanted(spec: SweepSpec) -> dict:
    return jsonable(spec.to_dict())


def _held(out: Path) -> dict | None:
    """The folder's sweep.json as prepare_folder compares it (knobs added since filled in)."""
    try:
        return _wanted(read_spec(out))
    except ValueError:
        return None


@contextlib.contextmanager
def joined(out: Path, spec: SweepSpec | None, *, force: bool = False):
    """Hold the folder as one of its workers while the block runs: sweep.json checked (or
    written, if the folder is new; spec None: only read) under its lock, the folder's lock
    held shared. OutputLocked while a single-process sweep runs in it; with force, another
    run's folder is emptied first, which needs every other process out of it."""
    if spec is None:
        read_spec(out)  # a folder that holds no sweep is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        with _manifest_lock(out):
            if spec is not None and force and _held(out) != _wanted(spec):
                try:
                    with exclusive_lock(out, what="run folder"):
                        prepare_folder(out, spec, force=True)
                except OutputLocked:
                    raise OutputLocked(
                        f"{out}: --force would replace a run that other processes are working "
                        "in; stop them first (python -m minicount sweep --status DIR)"
                    ) from None
            try:
                stack.enter_context(shared_lock(out, what="run folder"))
            except OutputLocked:
                raise OutputLocked(
                    f"{out}: a single-process sweep is running in this folder; workers "
                    "(--worker, --claim) share a folder only with other workers"
                ) from None
            remove_stale_temporaries(out / MANIFEST)  # a killed writer's (we hold its lock)
            if spec is not None:
                prepare_folder(out, spec, force=False)
        yield


def _who(worker: str, device: str, analyse: bool = True) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": worker,
            "device": device, "analyse": analyse}  # fmt: skip


def _log(folder: Path, event: str, who: dict, **more) -> None:
    """One line in the cell's workers.log (only the cell's lock holder writes it)."""
    line = json.dumps({"event": event, "time": round(time.time(), 3), **who, **more})
    with open(folder / LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class _Beat(Progress):
    """A cell's Progress that also rewrites its progress.json every BEAT_S seconds."""

    def __init__(self, total, *, folder: Path, who: dict, steps: int, reused: int, **kw):
        super().__init__(total, **kw)
        self.folder, self.who, self.steps, self.reused = folder, who, steps, reused
        self.started, self.last_beat = time.time(), float("-inf")

    def advance(self, n: float = 1) -> None:
        super().advance(n)
        if time.monotonic() - self.last_beat >= BEAT_S:
            self.beat()

    def set_done(self, done: float) -> None:  # (at each snapshot)
        super().set_done(done)
        self.beat()

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        spent = time.perf_counter() - self.t0
        worked = self.done - self.start
        record = {**self.who, "started": round(self.started, 3), "updated": round(time.time(), 3),
                  "step": int(self.done + self.reused), "steps": self.steps,
                  "steps_per_s": worked / spent if worked > 0 and spent > 0 else None}  # fmt: skip
        with contextlib.suppress(OSError):  # a heartbeat must never stop the training
            atomic_write(self.folder / PROGRESS, json.dumps(record))


def _take(folder: Path):
    """The cell's lock, held (a context manager to exit), or None if another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = exclusive_lock(folder, what="cell")
    try:
        lock.__enter__()
    except OutputLocked:
        return None
    return lock


def _train(spec, out, i, device, train_path, progress, who, analyse) -> None:
    """Train and analyse cell i (its lock held), resuming whatever is on disk."""
    cell, name = spec.cells[i], spec.names[i]
    folder = cell_folder(out, spec, i)
    for stale in [*folder.glob("*" + TEMP_SUFFIX), *folder.glob(f"{SNAPSHOTS}/*{TEMP_SUFFIX}")]:
        stale.unlink(missing_ok=True)  # a killed holder's (we hold the lock)
    j = twin(spec, i, analyse)
    reused = spec.cells[j].steps if j is not None else 0
    resumed = max([s["step"] for s in load_snapshots(folder)]
                  + [_checkpoint_step(folder / "model.npz") or 0])  # fmt: skip
    _log(folder, "start", who, step=resumed)
    bar = _Beat(cell.steps - reused, unit="step", enabled=progress, folder=folder, who=who,
                steps=cell.steps, reused=reused)  # fmt: skip
    label = f"[cell {i + 1}/{len(spec.cells)}] {name}"
    try:
        bar.beat()
        _run_reported(cell, label, name, spec, out, device, bar, train_path, 0, reused, analyse)
        bar.beat()
    except BaseException as e:
        with contextlib.suppress(OSError):
            _log(folder, "stop", who, error=type(e).__name__)
        raise
    finally:
        bar.close()
    _log(folder, "done", who, step=cell.steps)


def run_worker(
    spec: SweepSpec,
    out,
    *,
    share: tuple[int, int] | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    command: str = "",
    threads: int | None = 1,
    figures: bool = True,
    train_path: str = "fast",
    analyse: bool = True,
) -> dict | None:
    """One worker on the folder ``out``: share=(K, N) runs the K-th of N shares (see
    ``shares``), share=None claims cells until every one is done. Returns the results if
    this worker wrote the report (it found every cell done), else None. analyse=False
    (--train-only) trains and keeps each snapshot's parameters, and writes no report."""
    device = resolve_device(device)
    check_sweep(spec, device)
    out = Path(out)
    if str(out).strip() == "":
        raise ValueError("--out is empty: name a folder for the run")
    tag = "claim" if share is None else f"{share[0]}/{share[1]}"
    who = _who(tag, device, analyse)
    say = Progress(0, enabled=progress)
    mine = range(len(spec.cells)) if share is None else shares(spec, share[1])[share[0] - 1]
    with joined(out, spec, force=force), blas_limit(threads if device == "cpu" else None):
        what = "claiming cells" if share is None else f"worker {tag}: {len(mine)} cell(s)"
        say.line(f"{what} of {len(spec.cells)} x {len(spec.seeds)} seed(s) on {device} "
                 f"({who['host']}, pid {who['pid']}) -> {out}")  # fmt: skip
        waiting = None
        while True:
            left = [i for i in mine if not is_done(out, spec, i, analyse)]
            if not left:
                break
            took, blocked = False, []
            for i in left:
                j = twin(spec, i, analyse)
                if j is not None and not is_done(out, spec, j):
                    blocked.append(f"{spec.names[i]} (waits for {spec.names[j]})")
                    continue
                lock = _take(cell_folder(out, spec, i))
                if lock is None:
                    blocked.append(f"{spec.names[i]} (held by another worker)")
                    continue
                try:
                    if not is_done(out, spec, i, analyse):  # (not finished meanwhile by another)
                        _train(spec, out, i, device, train_path, progress, who, analyse)
                        took = True
                finally:
                    lock.__exit__(None, None, None)
                break  # look again from the first cell
            if not took and blocked:
                if blocked != waiting:
                    say.line(f"waiting for {len(blocked)} cell(s): " + "; ".join(blocked))
                    waiting = blocked
                time.sleep(POLL_S)
        if not all(is_done(out, spec, i, analyse) for i in range(len(spec.cells))):
            say.line(f"worker {tag}: its cells are done; the worker that finishes the last "
                     "cell writes the report (or: python -m minicount sweep --report-only "
                     f"{out})")  # fmt: skip
            return None
        if not analyse:
            say.line(f"trained; analyse with: python -m minicount sweep --reanalyze {out}")
            return None
        return write_report(spec, out, command=command, device=device, figures=figures,
                            say=say, again=False)  # fmt: skip


# ----------------------------------------------------------------------------- the report


def report_only(out, *, command: str = "", device: str = "cpu", figures: bool = True,
                progress: bool = True) -> dict:  # fmt: skip
    """(Re)write the report of a folder whose cells are all done; ValueError naming what is
    left otherwise, OutputLocked if another process is writing it."""
    out = Path(out)
    with joined(out, None):
        spec = read_spec(out)  # (read again: it could have been replaced meanwhile)
        left = [n for i, n in enumerate(spec.names) if not is_done(out, spec, i)]
        if left:
            raise ValueError(
                f"{out}: {len(left)} of {len(spec.cells)} cell(s) not done ({', '.join(left)});"
                f" see python -m minicount sweep --status {out}"
            )
        say = Progress(0, enabled=progress)
        earlier = earlier_meta(out)
        results = write_report(spec, out, command=earlier.get("command") or command,
                               device=earlier.get("device") or device, figures=figures,
                               say=say, again=True)  # fmt: skip
        if results is None:
            raise OutputLocked(f"{out}: another process is writing the report")
        return results


# ----------------------------------------------------------------------------- the status


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def seconds_per_step(folder: Path) -> float | None:
    """Wall-clock seconds (training and analysis) per step trained, from a cell's snapshots;
    None if none was trained here (a snapshot taken over from a twin took no time)."""
    spent = steps = 0.0
    previous = 0
    for snap in load_snapshots(folder):
        if snap["seconds"]["train"] > 0:
            spent += snap["seconds"]["train"] + snap["seconds"]["analysis"]
            steps += snap["step"] - previous
        previous = snap["step"]
    return spent / steps if steps > 0 else None


def status(out) -> str:
    """The folder's state as text: each cell done / running (host, pid, step) / waiting (for
    its shorter twin) / left, and an estimate of the time left at the measured rates."""
    out = Path(out)
    spec = read_spec(out)
    now = time.time()
    single = lock_is_held(out)  # a single-process sweep holds the folder's lock exclusively
    rows = []
    for i, (name, cell) in enumerate(zip(spec.names, spec.cells, strict=True)):
        folder = cell_folder(out, spec, i)
        snaps = [s["step"] for s in load_snapshots(folder)] if folder.is_dir() else []
        beat = _read_json(folder / PROGRESS) or {}
        rate = seconds_per_step(folder) if snaps else None
        if rate is None and beat.get("steps_per_s"):
            rate = 1.0 / beat["steps_per_s"]
        j = twin(spec, i)
        shape = (cell.n_heads, cell.d_model, cell.d_head, cell.max_len)  # what a step costs
        row = {"name": name, "steps": cell.steps, "rate": rate, "holder": None, "note": "",
               "shape": shape,
               "start": spec.cells[j].steps if j is not None else 0}  # fmt: skip
        if is_done(out, spec, i):
            row.update(state="done", at=cell.steps)
        elif folder.is_dir() and lock_is_held(folder):
            row.update(state="running", at=max([beat.get("step", 0)] + snaps))
            row["holder"] = (beat.get("host", "?"), beat.get("pid", "?"))
            row["note"] = f"{row['holder'][0]} pid {row['holder'][1]} (worker {beat.get('worker')}"
            if beat.get("steps_per_s"):
                row["note"] += f", {beat['steps_per_s']:.3g} steps/s"
            if "updated" in beat:
                row["note"] += f", updated {_duration(max(now - beat['updated'], 0))} ago"
            row["note"] += ")"
        elif is_done(out, spec, i, analyse=False) and (beat.get("analyse") is False
                                                       or not snaps):  # fmt: skip
            row.update(state="trained", at=cell.steps, note="not analysed (--train-only)")
        elif j is not None and not is_done(out, spec, j, analyse=False):
            row.update(state="waiting", at=max(snaps, default=0))
            row["note"] = f"for its shorter twin {spec.names[j]!r}"
        else:
            ck = _checkpoint_step(folder / "model.npz") if folder.is_dir() else None
            row.update(state="left", at=max(snaps + [ck or 0]))
            if single and not any(r["state"] == "running" for r in rows):
                row.update(state="running", note="by the single-process sweep in this folder")
            elif row["at"] > 0:
                row["note"] = f"resumes from step {row['at']}"
                if beat:
                    who = f"{beat.get('host')} pid {beat.get('pid')}"
                    row["note"] += f" (its worker, {who}, stopped)"
        rows.append(row)
    states = ("done", "trained", "running", "waiting", "left")
    counts = {s: sum(r["state"] == s for r in rows) for s in states}
    if not counts["trained"]:
        del counts["trained"]
    lines = [
        f"{out}: {len(spec.cells)} cell(s) x {len(spec.seeds)} seed(s)"
        + (f" (preset {spec.preset})" if spec.preset else "")
        + ": "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
    ]
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        digits = len(str(r["steps"]))
        lines.append(f"  {r['state']:<8} {r['name']:<{width}}  {r['at']:>{digits}}/{r['steps']} "
                     "steps" + (f"  {r['note']}" if r["note"] else ""))  # fmt: skip
    lines.append(_time_left(spec, rows, single))
    if (out / COMPLETE).exists():
        when = (out / COMPLETE).read_text().strip()
        lines.append(f"report: {out / 'report.md'} (complete since {when})")
    elif counts["done"] == len(spec.cells):
        lines.append(f"report: not written yet: python -m minicount sweep --report-only {out}")
    elif counts["done"] + counts.get("trained", 0) == len(spec.cells):
        lines.append(f"report: analyse first: python -m minicount sweep --reanalyze {out}")
    else:
        lines.append("report: written by the worker that finishes the last cell (or later by "
                     f"python -m minicount sweep --report-only {out})")  # fmt: skip
    return "\n".join(lines)


def _time_left(spec: SweepSpec, rows: list[dict], single: bool) -> str:
    """Seconds per step measured per cell (for a cell not measured yet: the median of the
    measured cells of its model shape, else of all) times the steps left; divided among the
    workers running now, but never below the longest chain of twins, which runs one cell
    after another."""
    left = [max(r["steps"] - max(r["at"], r["start"]), 0) for r in rows]  # (twin's: copied)
    if not any(left):
        return "time left: none (every cell is trained)"
    measured = [r["rate"] for r in rows if r["rate"] is not None]
    if not measured:
        return "time left: unknown until a cell has measured its step rate"
    typical = statistics.median(measured)
    alike = {}  # per model shape, the median rate of its measured cells
    for shape in {r["shape"] for r in rows}:
        rates = [r["rate"] for r in rows if r["shape"] == shape and r["rate"] is not None]
        alike[shape] = statistics.median(rates) if rates else typical
    seconds = [n * (r["rate"] or alike[r["shape"]]) for n, r in zip(left, rows, strict=True)]
    total = sum(seconds)
    longest = max(sum(seconds[i] for i in chain) for chain in chains(spec))
    running = len({r["holder"] for r in rows if r["holder"] is not None}) or int(single)
    text = f"time left: about {_duration(total)} of work for one worker"
    if running:
        text += (f"; with the {running} worker(s) running now, about "
                 f"{_duration(max(total / running, longest))}")  # fmt: skip
    return text + " (at the step rates measured in this folder)"
