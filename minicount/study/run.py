"""Running the sweep: a grid of settings ("cells", spec.py), each trained as one ensemble of
seeds, analysed at log-spaced snapshots through training, and written out as tables, figures
and a report.

    python -m minicount sweep --set n_heads=2,4,8 --set weight_decay=0,0.1 \\
        --seeds 0-31 --steps 1600 --out runs/wd

``python -m minicount reproduce`` runs a named preset of it (minicount/study/presets.py).

The run folder (every file written atomically; COMPLETE last):

    sweep.json                      what was asked; a rerun must ask the same (or --force)
    cells/<cell>/model.npz          the ensemble's latest checkpoint; at the end the trained
                                    models (``python -m minicount analyze`` reads it)
    cells/<cell>/step_0000025.json  the rows of one snapshot, written as soon as it is analysed
    cells/<cell>/snapshots/step_0000025.npz
                                    the ensemble's parameters at that snapshot (no optimiser
                                    state: about 18 KB per default model), so that every
                                    number can be recomputed without retraining
                                    (``python -m minicount sweep --reanalyze DIR``)
    cells/<cell>/analysis.json      every instrument on every member at the last step
    models.csv                      one row per cell x seed x snapshot
    heads.csv                       one row per cell x seed x snapshot x head
    results.json, report.md, figures/*.png
    COMPLETE                        the marker that everything above is from this run

Killed at any moment, the same command resumes: finished snapshots are kept, the cell in
progress continues from its last checkpoint (on NumPy bit for bit), and the final tables
equal an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import limits
from ..analysis import analyze_ensemble
from ..analysis.patterns import attention_patterns
from ..backend import resolve_device, to_device, to_numpy
from ..checkpoint import load_checkpoint, save
from ..data import DataConfig, encode, eval_set
from ..metrics import evaluate
from ..model import member
from ..progress import Progress
from ..record import jsonable, versions
from ..safeio import (
    TEMP_SUFFIX,
    OutputLocked,
    atomic_write,
    exclusive_lock,
    remove_stale_temporaries,
)
from ..threads import blas_limit
from ..train import SavedRun, run_checked, saved_run
from .rows import load_snapshots, snapshot_rows
from .spec import Cell, SweepSpec
from .summary import summarise

# ----------------------------------------------------------------------------- one cell


SNAPSHOT = "step_{:07d}.json"
SNAPSHOTS, CHECKPOINT = "snapshots", "step_{:07d}.npz"  # the kept parameters of each snapshot


def _checkpoint_step(path: Path) -> int | None:
    """The step a cell's checkpoint is at, or None when there is none (or it is unreadable)."""
    if not path.exists():
        return None
    try:
        step = load_checkpoint(path)["info"].get("step")
    except ValueError:
        return None
    return step if isinstance(step, int) else None


def advance(
    cell: Cell,
    spec: SweepSpec,
    ck: Path,
    step: int,
    device: str,
    train_path: str = "fast",
    progress: Progress | bool = False,
):
    """The ensemble's parameters after ``step`` steps (host arrays [M, ...]) and the training
    history, training (or resuming from ``ck``) as needed; ``ck`` holds them afterwards.
    ``progress`` (a Progress) is advanced by each training step."""
    saved = _readable_run(ck)  # read once: its step, or its parameters, or the run to resume
    at = saved.ck["info"]["step"] if saved else None
    if at is not None and at > step:  # later than this snapshot: it cannot be recovered
        ck.unlink()
        saved = at = None
    if at == step:
        return saved.ck["params"], saved.ck["info"].get("history", {})
    tc = cell.train_config(spec, step, device=device, path=train_path)
    # the memory of every cell was checked once, when the sweep started (check_sweep)
    return run_checked(cell.model_config(), tc, device, progress, str(ck), None, saved)


def _readable_run(ck: Path) -> SavedRun | None:
    """The run saved at ck (train.saved_run), or None when there is none or it is unreadable
    (then the cell starts again from its last snapshot's kept state, or from step 0)."""
    if not ck.exists():
        return None
    try:
        return saved_run(ck)
    except ValueError:
        return None


def check_sweep(spec: SweepSpec, device: str) -> None:
    """Refuse (one line naming the cell and the limit) a sweep on ``device`` (resolved) with
    a cell whose model is over the size limits, or whose ensemble does not fit by the one
    memory rule, ``limits.fits``; checked once, before the first cell (each cell checked its
    knobs, the spec its seeds, when made), and trusted by every segment of training."""
    for name, cell in zip(spec.names, spec.cells, strict=True):
        config = cell.model_config()  # the model-size limits (minicount/limits.py)
        shape = (config, len(spec.seeds), spec.batch_size, cell.max_len + 1)
        if not limits.fits(*shape, device, n_eval=spec.n_eval):
            need = limits.training_bytes(*shape, spec.n_eval)
            raise ValueError(
                f"cell '{name}' with {len(spec.seeds)} seeds needs about {need / 2**30:.1f} GiB, "
                f"more than the {limits.memory_limit(device) / 2**30:.1f} GiB this {device} "
                "has: use fewer seeds or a smaller batch"
            )


EXAMPLE = "1020120121102211"  # drawn in the attention figures, repeated to the cell's max_len


def example_string(max_len: int) -> str:
    return (EXAMPLE * (max_len // len(EXAMPLE) + 1))[:max_len]


def final_extras(params: dict, cell: Cell, spec: SweepSpec, device: str) -> dict:
    """Length generalisation of every member, and the first member's attention on an example."""
    config = cell.model_config()
    data = DataConfig(max_len=cell.max_len, bos=cell.bos, probs=cell.probs, n_eval=spec.n_eval)
    long = evaluate(to_device(params, device), *eval_set(data, long=True), config)
    tokens = encode(example_string(cell.max_len), bos=cell.bos)[None]  # [1, T]
    first = to_device(member(params, 0), device)
    pattern = attention_patterns(first, to_device(tokens, device), config)[0, 0]  # [H, T, T]
    return {
        "long": jsonable(long),
        "example": {"tokens": tokens[0].tolist(), "pattern": to_numpy(pattern).tolist()},
    }


def donor(cell: Cell, spec: SweepSpec, out: Path) -> tuple[Cell, str] | None:
    """The finished cell of this sweep that is the same run stopped earlier (every knob equal
    but fewer steps; the learning rate is constant, so its last checkpoint is this cell's
    state at that step), the longest such; None if there is none."""
    same = [(c, n) for c, n in zip(spec.cells, spec.names, strict=True)
            if cell.continues_from(c)
            and (out / "cells" / c.key() / "analysis.json").exists()]  # fmt: skip
    return max(same, key=lambda cn: cn[0].steps) if same else None


def reused_steps(spec: SweepSpec) -> list[int]:
    """Per cell, the steps it takes over from a shorter twin that runs before it (see
    ``donor``): the training it will not repeat. The sweep's progress counts the rest."""
    out = []
    for k, cell in enumerate(spec.cells):
        earlier = [c.steps for c in spec.cells[:k] if cell.continues_from(c)]
        out.append(max(earlier, default=0))
    return out


def start_from_donor(cell: Cell, name: str, spec: SweepSpec, out: Path, folder: Path) -> None:
    """Begin a cell with no checkpoint of its own from its donor (see ``donor``): the donor's
    snapshots that this cell also takes, relabelled, then the donor's last checkpoint (copied
    last, so that a kill in between leaves a cell that simply trains from the start)."""
    found = donor(cell, spec, out)
    if found is None or (folder / "model.npz").exists():
        return
    source, _ = found
    src = out / "cells" / source.key()
    wanted = set(spec.snapshots(cell))
    for step in sorted(wanted):  # the donor's kept parameters of the snapshots taken over
        kept = src / SNAPSHOTS / CHECKPOINT.format(step)
        if kept.exists() and not (folder / SNAPSHOTS / CHECKPOINT.format(step)).exists():
            (folder / SNAPSHOTS).mkdir(parents=True, exist_ok=True)
            atomic_write(folder / SNAPSHOTS / CHECKPOINT.format(step), kept.read_bytes())
    for snap in load_snapshots(src):
        path = folder / SNAPSHOT.format(snap["step"])
        if snap["step"] not in wanted or path.exists():
            continue
        for row in snap["models"] + snap["heads"]:
            row.update(name=name, steps=cell.steps)
        for row in snap["models"]:
            row["long_l_acc"] = None  # measured at a cell's last step only
        snap["seconds"] = {"train": 0.0, "analysis": 0.0}  # counted where they were spent
        atomic_write(path, json.dumps(snap, allow_nan=False))
    atomic_write(folder / "model.npz", (src / "model.npz").read_bytes())


def run_cell(
    cell: Cell,
    name: str,
    spec: SweepSpec,
    folder: Path,
    device: str,
    say,
    train_path="fast",
    progress: Progress | bool = False,
    analyse: bool = True,
) -> None:
    """Train and analyse one cell, snapshot by snapshot, skipping the snapshots on disk.
    analyse=False only trains and keeps each snapshot's parameters (for ``reanalyze``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ck = folder / "model.npz"
    remove_stale_temporaries(ck)
    start_from_donor(cell, name, spec, folder.parent.parent, folder)
    config = cell.model_config()
    data = DataConfig(max_len=cell.max_len, bos=cell.bos, probs=cell.probs, n_eval=spec.n_eval)
    held_out = None
    steps = spec.snapshots(cell)
    for step in steps:
        path = folder / SNAPSHOT.format(step)
        if path.exists() or not analyse and (folder / SNAPSHOTS / CHECKPOINT.format(step)).exists():
            continue
        held_out = held_out or eval_set(data)
        t0 = time.perf_counter()
        params, history = advance(cell, spec, ck, step, device, train_path, progress)
        t1 = time.perf_counter()
        if spec.keep_checkpoints or not analyse:
            keep_snapshot(folder, step, params, config, spec, train_seconds=t1 - t0)
        if not analyse:
            say(step, t1 - t0, 0.0, None)
            continue
        label = progress.desc if isinstance(progress, Progress) else None
        if label is not None:
            progress.describe(f"{label} (analysing step {step})")
        models = analyse_snapshot(
            cell, name, spec, folder, step, params, held_out, device,
            last=step == steps[-1], curve=history.get("eval", []),
            train_seconds=t1 - t0,
        )  # fmt: skip
        if label is not None:
            progress.describe(label)
        seconds = load_snapshot(path)["seconds"]
        say(step, seconds["train"], seconds["analysis"], models)


def keep_snapshot(
    folder: Path, step: int, params: dict, config, spec: SweepSpec, *, train_seconds: float = 0.0
) -> None:
    """Keep the ensemble's parameters at ``step`` (host arrays) under snapshots/."""
    (folder / SNAPSHOTS).mkdir(exist_ok=True)
    info = {"step": int(step), "seeds": [int(s) for s in spec.seeds],
            "train_seconds": float(train_seconds)}  # fmt: skip
    save(folder / SNAPSHOTS / CHECKPOINT.format(step), params, config, info=info)


def analyse_snapshot(
    cell: Cell,
    name: str,
    spec: SweepSpec,
    folder: Path,
    step: int,
    params: dict,
    held_out,
    device: str,
    *,
    last: bool,
    curve: list,
    train_seconds: float,
) -> list[dict]:
    """Analyse the ensemble ``params`` (host arrays) at ``step`` and write the snapshot's rows
    (and, at the cell's last step, analysis.json); returns the model rows."""
    config = cell.model_config()
    t0 = time.perf_counter()
    members = analyze_ensemble(
        to_device(params, device), *held_out, config,
        subsets=spec.subsets, interventions=spec.interventions,
    )  # fmt: skip
    analysis_seconds = time.perf_counter() - t0
    models, heads = snapshot_rows(cell, name, spec.seeds, step, members)
    if last:
        extras = final_extras(params, cell, spec, device)
        for row, long_l_acc in zip(models, np.atleast_1d(extras["long"]["l_acc"]), strict=True):
            row["long_l_acc"] = float(long_l_acc)
        record = {"name": name, "cell": asdict(cell), "seeds": list(spec.seeds),
                  "members": members, "curve": curve, **extras}  # fmt: skip
        atomic_write(folder / "analysis.json", json.dumps(jsonable(record), allow_nan=False))
    snapshot = {"step": step, "models": models, "heads": heads,
                "seconds": {"train": train_seconds, "analysis": analysis_seconds}}  # fmt: skip
    atomic_write(folder / SNAPSHOT.format(step), json.dumps(jsonable(snapshot), allow_nan=False))
    return models


def load_snapshot(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def cell_seconds(folder: Path) -> dict:
    """The seconds a cell's snapshots took: {"train": ..., "analysis": ...}."""
    snaps = load_snapshots(folder)
    return {k: sum(s["seconds"][k] for s in snaps) for k in ("train", "analysis")}


def earlier_meta(out: Path) -> dict:
    """The meta record of the results already in ``out`` ({} when there are none): the
    run's own command and device outlive a rewrite of its report."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((out / "results.json").read_text()).get("meta") or {}
    return {}


def reanalyze_cell(cell: Cell, name: str, spec: SweepSpec, folder: Path, device: str,
                   bar: Progress) -> list[str]:  # fmt: skip
    """Recompute every snapshot of one cell from its kept parameters (snapshots/), with the
    instruments of this version; returns the steps that kept none (left as they were). The
    history curve of analysis.json is kept from the run."""
    data = DataConfig(max_len=cell.max_len, bos=cell.bos, probs=cell.probs, n_eval=spec.n_eval)
    held_out = eval_set(data)
    steps = spec.snapshots(cell)
    missing = []
    for step in steps:
        kept = folder / SNAPSHOTS / CHECKPOINT.format(step)
        if not kept.exists():
            missing.append(f"{cell.key()} step {step}")
            bar.advance(1)
            continue
        old = folder / SNAPSHOT.format(step)
        saved = load_checkpoint(kept)
        train_seconds = (load_snapshot(old)["seconds"]["train"] if old.exists()
                         else float(saved["info"].get("train_seconds", 0.0)))  # fmt: skip
        curve = []
        if step == steps[-1] and (folder / "analysis.json").exists():
            curve = json.loads((folder / "analysis.json").read_text()).get("curve", [])
        analyse_snapshot(cell, name, spec, folder, step, saved["params"], held_out, device,
                         last=step == steps[-1], curve=curve,
                         train_seconds=train_seconds)  # fmt: skip
        bar.advance(1)
    return missing


# ----------------------------------------------------------------------------- the folder


MANIFEST, COMPLETE = "sweep.json", "COMPLETE"
LOCKS = (".lock", ".manifest.lock", ".report.lock")  # the folder's, sweep.json's, the report's
OUTPUTS = ("models.csv", "heads.csv", "results.json", "report.md", "figures", "cells", COMPLETE)


def prepare_folder(out: Path, spec: SweepSpec, *, force: bool) -> None:
    """Make ``out`` hold this sweep: new, or the same sweep to resume. Another run's folder is
    refused (or, with force, its outputs are removed); so is a folder that is no run's."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    manifest = out / MANIFEST
    wanted = jsonable(spec.to_dict())
    if manifest.exists():
        try:  # read through the spec, so that knobs added since fill in their defaults
            held = jsonable(SweepSpec.from_dict(json.loads(manifest.read_text())).to_dict())
        except (OSError, ValueError, TypeError, KeyError):
            held = None
        if held != wanted:
            if not force:
                what = _difference(held, wanted)
                raise ValueError(
                    f"{out} holds another run ({what}); rerun that run's command to resume it, "
                    "choose another --out, or pass --force to replace it"
                )
            for name in OUTPUTS + (MANIFEST,):
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    elif out.exists() and any(p.name not in LOCKS for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no minicount sweep: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        atomic_write(manifest, json.dumps(wanted, indent=1))


def _difference(held, wanted: dict) -> str:
    if not isinstance(held, dict):
        return "an unreadable sweep.json"
    keys = [k for k in wanted if held.get(k) != wanted[k]]
    return "different " + ", ".join(keys) if keys else "different settings"


def run_sweep(
    spec: SweepSpec,
    out,
    *,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    command: str = "",
    threads: int | None = 1,
    figures: bool = True,
    train_path: str = "fast",
    analyse: bool = True,
) -> dict | None:
    """Run (or resume) every cell of ``spec`` into the folder ``out``; returns the results.
    figures=False skips the PNGs (the tables and the report are written all the same);
    train_path is TrainConfig.path for the training (saved in each cell's checkpoint).
    analyse=False only trains, keeping every snapshot's parameters, and returns None: a GPU
    can train while the analysis runs later anywhere (``reanalyze``)."""
    device = resolve_device(device)
    check_sweep(spec, device)
    out = Path(out)
    if str(out).strip() == "":
        raise ValueError("--out is empty: name a folder for the run")
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out, what="run folder"):
        prepare_folder(out, spec, force=force)
        for stale in out.rglob("*" + TEMP_SUFFIX):  # left by killed writers (we hold the lock)
            stale.unlink(missing_ok=True)
        if (out / COMPLETE).exists():
            (out / COMPLETE).unlink()  # rewritten last, after the outputs below
        M = len(spec.seeds)
        reused = reused_steps(spec)  # steps a cell takes over from its shorter twin
        bar = Progress(
            sum(c.steps - r for c, r in zip(spec.cells, reused, strict=True)),
            unit="step",
            enabled=progress,
        )
        bar.line(f"{len(spec.cells)} cell(s) x {M} seed(s) on {device} -> {out}")
        with blas_limit(threads if device == "cpu" else None):
            offset = 0  # the steps trained by the cells before this one
            for k, (name, cell) in enumerate(zip(spec.names, spec.cells, strict=True), 1):
                label = f"[{k}/{len(spec.cells)}] {name}"
                _run_reported(
                    cell, label, name, spec, out, device, bar, train_path, offset,
                    reused[k - 1], analyse,
                )  # fmt: skip
                offset += cell.steps - reused[k - 1]
        if not analyse:
            bar.line(f"trained; analyse with: python -m minicount sweep --reanalyze {out}")
            bar.close()
            return None
        results = write_report(spec, out, command=command, device=device, figures=figures,
                               say=bar, again=True)  # fmt: skip
        bar.close()
        return results


def _run_reported(
    cell: Cell,
    label: str,
    name: str,
    spec: SweepSpec,
    out: Path,
    device: str,
    bar: Progress,
    train_path: str = "fast",
    offset: int = 0,
    reused: int = 0,
    analyse: bool = True,
) -> None:
    """run_cell with a progress line per snapshot.
    ``bar`` counts the steps trained in every cell; this cell's start at ``offset``, and its
    first ``reused`` steps come from its shorter twin (not trained, not counted)."""
    folder = out / "cells" / cell.key()
    M = len(spec.seeds)
    before = [s["step"] for s in load_snapshots(folder)] if folder.exists() else []
    trained = lambda step: offset + max(step - reused, 0)  # noqa: E731 (bar count at step)
    bar.describe(label)
    resumed = max(before + [_checkpoint_step(folder / "model.npz") or 0])  # done by a killed run
    bar.skip_to(max(trained(resumed), bar.done))  # shown as done, left out of the rate
    if before:
        bar.line(f"{label}: resuming after step {max(before)}")

    def say(step, train_s, analysis_s, models):
        bar.set_done(trained(step))  # also counts steps a resumed checkpoint had done
        if models is None:
            bar.line(f"{label}: step {step}/{cell.steps} trained in {train_s:.1f}s, kept")
            return
        l_acc = [r["l_acc"] for r in models]
        bar.line(
            f"{label}: step {step}/{cell.steps}, held-out l-acc mean {np.mean(l_acc):.3f} "
            f"(min {np.min(l_acc):.3f}) over {M} seeds; train {train_s:.1f}s, analysis "
            f"{analysis_s:.1f}s"
        )

    run_cell(cell, name, spec, folder, device, say, train_path, bar, analyse)


def run_meta(spec: SweepSpec, device: str, command: str, timings: dict) -> dict:
    return {
        "command": command,
        "device": device,
        "preset": spec.preset,
        "versions": versions(device),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": timings,
    }  # fmt: skip


# ----------------------------------------------------------------------------- the report


LOG = "workers.log"  # one JSON line per start, finish or stop of a worker on a cell (workers.py)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_spec(out: Path) -> SweepSpec:
    """The sweep a folder holds (its sweep.json); ValueError if it holds none."""
    held = _read_json(out / MANIFEST)
    if held is None:
        raise ValueError(f"{out} holds no minicount sweep (no readable {MANIFEST})")
    try:
        return SweepSpec.from_dict(held)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{out / MANIFEST}: not a sweep this minicount can read ({e})") from None


def read_log(folder: Path) -> list[dict]:
    """The events of a cell's workers.log (a line cut short by a crash is skipped)."""
    events = []
    with contextlib.suppress(OSError):
        for line in (folder / LOG).read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def devices_used(out: Path, spec: SweepSpec) -> set:
    """The devices named in the cells' workers.log (empty for a single-process sweep)."""
    return {e["device"] for cell in spec.cells
            for e in read_log(out / "cells" / cell.key()) if e.get("device")}  # fmt: skip


def write_report(spec, out: Path, *, command: str, device: str, figures: bool, say,
                 again: bool, note: dict | None = None) -> dict | None:  # fmt: skip
    """Write the tables, figures, report and COMPLETE from the cell folders, holding the
    report's lock; None (nothing written) if another process holds it, or, unless
    ``again``, if the report is already there. The folder must be joined (or held alone).
    The one writer of a report: every sweep, worker, --report-only and --reanalyze ends
    here. ``note``: more fields for results.json's meta."""
    try:
        lock = exclusive_lock(out / ".report", what="report")
        lock.__enter__()
    except OutputLocked:
        say.line("another process is writing the report")
        return None
    try:
        if (out / COMPLETE).exists() and not again:
            return None
        for stale in [*out.glob("*" + TEMP_SUFFIX), *out.glob("figures/*" + TEMP_SUFFIX)]:
            stale.unlink(missing_ok=True)  # a killed report writer's (we hold its lock)
        (out / COMPLETE).unlink(missing_ok=True)
        devices = devices_used(out, spec) or {device}
        timings = {name: cell_seconds(out / "cells" / cell.key())
                   for name, cell in zip(spec.names, spec.cells, strict=True)}  # fmt: skip
        say.line("writing tables, figures and the report")
        meta = {**run_meta(spec, "+".join(sorted(devices)), command, timings), **(note or {})}
        results = summarise(spec, out, meta=meta, figures=figures)
        atomic_write(out / COMPLETE, time.strftime("%Y-%m-%d %H:%M:%S\n"))
        say.line(f"done: {out / 'report.md'}")
        return results
    finally:
        lock.__exit__(None, None, None)


def reanalyze(out, *, device: str = "cpu", progress: bool = True, figures: bool = True) -> dict:
    """Recompute every snapshot of a sweep folder from its kept parameters (snapshots/), with
    the instruments of this version, on ``device``, then rewrite the tables, results and
    report (write_report). Training is not repeated; a snapshot without kept parameters is
    left as it was (and named). Holds the folder alone: no worker may run in it meanwhile."""
    out = Path(out)
    spec = read_spec(out)
    device = resolve_device(device)
    bar = Progress(sum(len(spec.snapshots(c)) for c in spec.cells), unit="snapshot",
                   enabled=progress)  # fmt: skip
    with exclusive_lock(out, what="run folder"):
        missing = []
        for name, cell in zip(spec.names, spec.cells, strict=True):
            missing += reanalyze_cell(cell, name, spec, out / "cells" / cell.key(), device, bar)
        if missing:
            bar.line(f"no kept parameters (left as they were): {', '.join(missing)}")
        earlier = earlier_meta(out)
        results = write_report(
            spec, out, command=earlier.get("command") or "(trained with --train-only)",
            device=earlier.get("device") or device, figures=figures, say=bar, again=True,
            note={"reanalyzed": f"every snapshot recomputed from its kept parameters on {device}"},
        )  # fmt: skip
    bar.close()
    if results is None:
        raise OutputLocked(f"{out}: another process is writing the report")
    return results
