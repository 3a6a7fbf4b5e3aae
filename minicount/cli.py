"""Command line: ``python -m minicount {train,eval,reproduce,sweep,analyze,bench} ...``
(``--help`` on each).

Every option's default is read from the dataclass field it sets (ModelConfig, TrainConfig,
DataConfig, the sweep's Cell and SweepSpec: ``default(cls, name)``), and every check of an
option is its field's check (minicount/checks.py), made here as an argparse type. It writes
only where --out (or --resume) points, prints results on stdout, and reports bad input as
one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import runpy
import signal
import sys
import threading
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from . import limits
from .analysis.ensemble import analyze_members
from .backend import DEVICES, resolve_device, to_device
from .checkpoint import check_writable, load_checkpoint
from .checks import check_int
from .data import DataConfig, context_length, eval_set
from .metrics import checkpoint_data, evaluate_held_out
from .model import ModelConfig, members
from .optim import SCHEDULES
from .record import json_text, versions
from .safeio import atomic_write, exclusive_lock, remove_stale_temporaries, resolve_target
from .study.presets import PRESETS, preset
from .study.report import analysis_summary
from .study.run import COMPLETE, reanalyze, run_sweep
from .study.spec import BASE, KNOBS, SEEDS, Cell, SweepSpec, sweep_spec
from .study.workers import parse_worker, report_only, run_worker, status
from .train import DTYPES, TrainConfig, saved_run, train_with_config

DESCRIPTION = """\
minicount: a from-scratch transformer (hand-written backprop, NumPy or CuPy) that learns
Count01 (does a string over {0,1,2} hold more 1s than 0s?), and the study of how its
attention heads share the work.
"""


# ----------------------------------------------------------------------------- option types


def option(parse):
    """An argparse type made of parse(text) -> value: its ValueError becomes argparse's
    one-line usage error (exit code 2), in the check's own words."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def int_option(minimum: int):
    """An argparse type: a whole number >= minimum."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        return check_int("", value, minimum)

    return option(whole_number)


@option
def number_option(text: str) -> float:
    """An argparse type: a finite number (its range is the field's check, at the config)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


@option
def seeds_option(text: str) -> list[int]:
    """'3' -> [3]; '0,1,5' -> [0, 1, 5]; '0-7' -> [0, ..., 7]; at most MAX_ENSEMBLE seeds,
    counted before a range is expanded."""
    is_range = "-" in text.strip("-")
    try:
        if is_range:
            lo, hi = (int(x) for x in text.split("-"))
            count = hi - lo + 1
        else:
            seeds = [int(s) for s in text.split(",")]
            lo, count = min(seeds), len(seeds)
    except ValueError:
        raise ValueError(f"seeds look like 3, 0,1,5 or 0-7; got {text!r}") from None
    if lo < 0:
        raise ValueError(f"seeds must be non-negative, got {text!r}")
    if count < 1:
        raise ValueError(f"a seed range lo-hi needs lo <= hi, got {text!r}")
    if count > limits.MAX_ENSEMBLE:
        raise ValueError(
            f"{count:,} seeds is over the limit of {limits.MAX_ENSEMBLE} models in one run"
        )
    return list(range(lo, hi + 1)) if is_range else seeds


@option
def heads_option(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    try:
        heads = [int(h) for h in text.split(",")]
    except ValueError:
        raise ValueError(f"heads look like 4 or 1,2,4,8; got {text!r}") from None
    if not heads or any(h < 1 for h in heads):
        raise ValueError(f"head counts must be >= 1, got {text!r}")
    return heads


_positive_int = int_option(1)
_non_negative_int = int_option(0)


def default(cls, name: str):
    """The default of a dataclass's field: the one source of every option's default here."""
    return next(f.default for f in fields(cls) if f.name == name)


def _field_option(g, cls, name: str, help: str, **kw) -> None:
    """The option --name-with-dashes for the field ``name`` of the dataclass cls, with the
    field's default."""
    g.add_argument("--" + name.replace("_", "-"), default=default(cls, name), help=help, **kw)


@contextlib.contextmanager
def _signals_interrupt():
    """While the block runs, SIGTERM and SIGHUP stop it as Ctrl-C does (main thread only)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        names = []
    old = {n: signal.signal(getattr(signal, n), interrupt) for n in names}
    try:
        yield
    finally:
        for n, handler in old.items():
            signal.signal(getattr(signal, n), handler)


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the study's one-layer attention-only NoPE model)")
    for name, what in (("d_model", "residual width"), ("n_heads", "heads per layer"),
                       ("d_head", "width per head"), ("n_layers", "blocks"),
                       ("d_mlp", "MLP width, with --mlp")):  # fmt: skip
        _field_option(g, ModelConfig, name, what + " (%(default)s)", type=_positive_int)
    g.add_argument(
        "--n-ctx",
        type=_positive_int,
        default=None,
        help="context length for --pos-emb (default: 2*max_len+1)",
    )
    g.add_argument(
        "--pos-emb", action="store_true", help="learned positional embedding (default NoPE)"
    )
    g.add_argument(
        "--layernorm", action="store_true", help="pre-LayerNorm blocks and a final LayerNorm"
    )
    g.add_argument("--mlp", action="store_true", help="add a ReLU MLP to each block")


def model_config_from_args(a: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        d_model=a.d_model,
        n_heads=a.n_heads,
        d_head=a.d_head,
        n_layers=a.n_layers,
        n_ctx=a.n_ctx or context_length(a.max_len),
        pos_emb=a.pos_emb,
        layernorm=a.layernorm,
        mlp=a.mlp,
        d_mlp=a.d_mlp,
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The training options, one call per TrainConfig field (a long list, read as a table)."""
    g = p.add_argument_group("training")

    def option(name, help, **kw):
        _field_option(g, TrainConfig, name, help, **kw)

    option("steps", "optimiser steps (%(default)s)", type=_non_negative_int)
    option("batch_size", "strings per step (%(default)s)", type=_positive_int)
    option("lr", "AdamW learning rate (%(default)s)", type=number_option)
    option("weight_decay", "AdamW weight decay (%(default)s)", type=number_option)
    option("warmup", "linear warm-up steps (%(default)s)", type=_non_negative_int)
    option("schedule", "learning-rate schedule after warm-up (%(default)s)", choices=SCHEDULES)
    option("grad_clip", "max gradient norm per model (%(default)s = off)", type=number_option)
    seeds = ",".join(map(str, default(TrainConfig, "seeds")))
    option(
        "seeds",
        f"default {seeds}; e.g. 7 (one seed), 0,1,5 (a list) or 0-7 (a range); several seeds "
        "train an ensemble, one model per seed",
        type=seeds_option,
    )
    option(
        "data_seed",
        "every model of an ensemble sees the same batches, drawn from this seed (one batch "
        "per step instead of one per model: faster for big ensembles)",
        type=_non_negative_int,
    )
    option("n_eval", "held-out strings for the evaluations (%(default)s)", type=_positive_int)
    option(
        "eval_every",
        "evaluate every N steps (%(default)s; 0 = only at the end)",
        type=_non_negative_int,
    )
    option(
        "dtype",
        "floating-point precision of parameters and activations (%(default)s; float64 for "
        "gradient checks)",
        choices=DTYPES,
    )
    option(
        "device",
        "cpu: NumPy; gpu: CuPy on a CUDA GPU; auto: the GPU when CuPy finds one, else the "
        "CPU (%(default)s)",
        choices=DEVICES,
    )
    option(
        "checkpoint_every",
        "also save the checkpoint every N steps (default %(default)s: at each evaluation)",
        type=_non_negative_int,
    )
    g.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        default=None,
        help="continue the run saved in CHECKPOINT with its own settings (only "
        "--steps, --device, --eval-every, --checkpoint-every, --out may change; "
        "--out defaults to CHECKPOINT)",
    )
    d = p.add_argument_group("data")
    _field_option(d, TrainConfig, "max_len", "longest training string (%(default)s)",
                  type=_positive_int)  # fmt: skip
    d.add_argument("--no-bos", action="store_true", help="leave out the BOS token")
    probs = " ".join(f"{p:.3g}" for p in default(TrainConfig, "probs"))
    _field_option(d, TrainConfig, "probs", f"symbol probabilities ({probs})",
                  type=number_option, nargs=3, metavar=("P0", "P1", "P2"))  # fmt: skip


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        warmup=a.warmup,
        schedule=a.schedule,
        grad_clip=a.grad_clip,
        seeds=tuple(a.seeds),
        max_len=a.max_len,
        bos=not a.no_bos,
        probs=tuple(a.probs),
        eval_every=a.eval_every,
        device=a.device,
        dtype=a.dtype,
        checkpoint_every=a.checkpoint_every,
        data_seed=a.data_seed,
        n_eval=a.n_eval,
        path=_path(a),
    )


def _path(a: argparse.Namespace) -> str:
    """TrainConfig.path asked for on the command line: 'fused' with --fused-kernel, else 'fast'."""
    return "fused" if getattr(a, "fused_kernel", False) else "fast"


def given_train_options(argv: list[str]) -> set[str]:
    """The dests of the options given after 'train' on the command line (not defaulted)."""
    q = argparse.ArgumentParser(add_help=False)
    add_model_args(q)
    add_train_args(q)
    q.add_argument("--out")
    unset = object()
    q.set_defaults(**dict.fromkeys(vars(q.parse_args([])), unset))
    return {k for k, v in vars(q.parse_known_args(argv)[0]).items() if v is not unset}


def resumed_settings(a: argparse.Namespace, given: set[str]):
    """(ModelConfig, TrainConfig) to resume a.resume with: the run's own settings, with the
    options given on the command line put over them. Whether they may change is decided
    where every resume is, in train.check_same_run: only RESUMABLE_FIELDS may."""
    ck, saved = saved_run(a.resume)
    asked = {"bos" if dest == "no_bos" else dest for dest in given}
    model = {k: v for k, v in model_config_from_args(a).to_dict().items() if k in asked}
    train = {k: v for k, v in train_config_from_args(a).to_dict().items() if k in asked}
    return replace(ck["config"], **model), replace(saved, **train)


def cmd_train(a: argparse.Namespace) -> int:
    if a.resume:
        given = given_train_options(a.argv[1:])
        config, tc = resumed_settings(a, given)
        if a.fused_kernel:  # a path may change on resume (only rounding differs)
            tc = replace(tc, path="fused")
        out = check_writable(a.out if "out" in given else a.resume)
    else:
        config, tc = model_config_from_args(a), train_config_from_args(a)
        out = check_writable(a.out)
    try:
        with _signals_interrupt(), np.errstate(over="ignore", invalid="ignore"):
            # (errstate: a NonFiniteError says it better than NumPy's warnings)
            params, history = train_with_config(
                config, tc, progress=True, checkpoint=out, resume=a.resume
            )
    except KeyboardInterrupt as e:
        ck = getattr(e, "checkpoint", None)  # this run's own, never an older run's file
        hint = f"; continue with: python -m minicount train --resume {ck}" if ck else ""
        print(f"minicount train: interrupted{hint}", file=sys.stderr)
        return 130
    final = history["eval"][-1]
    result = {k: final[k] for k in ("step", "loss", "l_acc", "s_acc", "roc_auc")}
    result.update(seeds=list(tc.seeds), versions=versions(resolve_device(tc.device)))
    print(json_text(result))
    print(f"checkpoint: {out}", file=sys.stderr)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    ck, data = _checkpoint_and_data(a, long=True)
    params = to_device(ck["params"], a.device)
    print(json_text(evaluate_held_out(params, data, ck["config"]), indent=2))
    return 0


def _checkpoint_and_data(a: argparse.Namespace, *, long: bool):
    """The checkpoint a.checkpoint (NaN or inf parameters refused) and the DataConfig of its
    held-out strings (``metrics.checkpoint_data``)."""
    ck = load_checkpoint(a.checkpoint)
    eval_seed = getattr(a, "eval_seed", default(DataConfig, "eval_seed"))
    no_bos = getattr(a, "no_bos", False)
    data = checkpoint_data(
        ck, max_len=a.max_len, no_bos=no_bos, n_eval=a.n_eval, eval_seed=eval_seed, long=long
    )
    return ck, data


def _run_options(a: argparse.Namespace) -> dict:
    """The keyword options that run_sweep and run_worker share, from the command line."""
    return dict(
        device=a.device,
        force=a.force,
        progress=not a.quiet,
        command=" ".join(["python -m minicount"] + a.argv),
        threads=a.threads or None,
        figures=not a.no_figures,
        train_path=_path(a),
        analyse=not getattr(a, "train_only", False),
    )


def _sweep_run(spec, a: argparse.Namespace) -> int:
    out = Path(a.out)
    if a.worker is not None or a.claim:
        if a.worker is not None and a.claim:
            raise ValueError("--worker and --claim are two ways to share the cells: give one")
        share = None if a.claim else parse_worker(a.worker)
        run_worker(spec, out, share=share, **_run_options(a))
        if (out / COMPLETE).exists():
            print(out / "report.md")
        return 0
    run_sweep(spec, out, **_run_options(a))
    print(out / ("report.md" if not getattr(a, "train_only", False) else "cells"))
    return 0


def _sweep_folder_command(a: argparse.Namespace) -> int:
    """sweep --status DIR or --report-only DIR: the folder's own sweep.json says the cells."""
    if a.status is not None and a.report_only is not None:
        raise ValueError("--status and --report-only: give one")
    flag = "--status" if a.status is not None else "--report-only"
    defaults = vars(build_parser().parse_args(["sweep"]))
    allowed = {"status", "report_only", "quiet", "no_figures", "device", "threads", "argv"}
    given = sorted(
        "--" + k.replace("_", "-") for k, v in vars(a).items()
        if k not in allowed and k in defaults and v != defaults[k]
    )  # fmt: skip
    if given:
        raise ValueError(
            f"{flag} DIR reads the cells from DIR/sweep.json and takes no {', '.join(given)}"
        )
    if a.status is not None:
        print(status(a.status))
        return 0
    report_only(
        a.report_only,
        command=" ".join(["python -m minicount"] + a.argv),
        device=a.device,
        figures=not a.no_figures,
        progress=not a.quiet,
    )
    print(Path(a.report_only) / "report.md")
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    spec = preset("quick" if a.quick else a.preset, seeds=a.seeds, heads=a.heads, steps=a.steps)
    return _sweep_run(spec, a)


def cmd_sweep(a: argparse.Namespace) -> int:
    if a.status is not None or a.report_only is not None:
        return _sweep_folder_command(a)
    if a.reanalyze:
        reanalyze(a.reanalyze, device=a.device, progress=not a.quiet, figures=not a.no_figures)
        print(Path(a.reanalyze) / "report.md")
        return 0
    spec = sweep_spec(
        a.set,
        steps=a.steps,
        seeds=a.seeds,
        batch_size=a.batch_size,
        n_eval=a.n_eval,
        first_snapshot=a.first_snapshot,
        subsets=not a.no_subsets,
        snapshot_every=a.snapshot_every,
    )
    return _sweep_run(spec, a)


def cmd_analyze(a: argparse.Namespace) -> int:
    """Print the analysis, or write it to --out atomically, holding a lock on it meanwhile."""
    if a.out is not None:
        with exclusive_lock(check_output(a.out), what="output"):
            remove_stale_temporaries(a.out)  # of killed writes: a live one would hold the lock
            text = _analysis_json(a)
            atomic_write(a.out, text)
        print(a.out)
    elif a.json:
        print(_analysis_json(a))
    else:
        print(analysis_summary(json.loads(_analysis_json(a))))
    return 0


def check_output(path) -> Path:
    """The regular file that --out names (symlinks followed), or an error if it cannot be one."""
    if not str(path):
        raise ValueError("--out is empty: name a file")
    return resolve_target(path)


def _analysis_json(a: argparse.Namespace) -> str:
    """The analysis of a.checkpoint as JSON text."""
    ck, data = _checkpoint_and_data(a, long=False)
    tokens, targets, mask = eval_set(data)
    models = members(ck["params"])
    if a.member is not None and a.member >= len(models):
        raise ValueError(f"--member {a.member}: the checkpoint holds {len(models)} model(s)")
    chosen = range(len(models)) if a.member is None else [a.member]
    analyses = analyze_members(models, chosen, tokens, targets, mask, ck["config"], a.device)
    result = {
        "checkpoint": str(a.checkpoint),
        "n_eval": a.n_eval,
        "max_len": data.max_len,
        "members": [{"member": i, **r} for i, r in zip(chosen, analyses, strict=True)],
    }
    return json_text(result, indent=1)


def _add_device_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument(
        "--device",
        choices=DEVICES,
        default=default(TrainConfig, "device"),
        help=f"{what}cpu: NumPy; gpu: CuPy; auto: the GPU when CuPy finds one (%(default)s)",
    )


def _add_run_folder_args(p: argparse.ArgumentParser, default_out: str) -> None:
    _add_device_arg(p, "where to train and analyse: ")
    p.add_argument(
        "--threads",
        type=_non_negative_int,
        default=1,
        help="BLAS threads on the CPU (default 1: small matrices gain nothing from more; "
        "0 = the library's default)",
    )
    p.add_argument("--out", default=default_out, help="run folder (%(default)s)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the outputs of a different run already in --out (without it such a "
        "folder is refused; the same command resumes its own run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--fused-kernel",
        action="store_true",
        help="on the GPU, train attention through the fused CUDA kernel wherever no hook "
        "reads it (TrainConfig.path='fused', fast/attention_cuda.py; checked against the "
        "textbook layers/attention.py)",
    )
    _add_worker_args(p)


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "many processes on one folder (one machine or many sharing a file system; see "
        "docs/library.md)"
    )
    g.add_argument(
        "--worker",
        metavar="K/N",
        default=None,
        help="train only the K-th of N fixed shares of the cells (1 <= K <= N; a cell and the "
        "shorter twins it continues from fall in one share), then exit. Start K = 1..N with "
        "the same other arguments (a Slurm job array: scripts/slurm_sweep.sbatch); a share "
        "whose worker died is finished by starting that K/N again",
    )
    g.add_argument(
        "--claim",
        action="store_true",
        help="train the next cell that no other process holds, again and again; while every "
        "cell left is held by another process, wait and take over the cell of any that dies "
        "(resumed from its checkpoint); exit when every cell is done. Any number may share "
        "--out, with --worker processes too. Whichever worker finds every cell done writes "
        "the report; without --worker or --claim the sweep runs in this process alone",
    )


def add_reproduce_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="the study: a preset sweep that trains, analyses and writes a report",
        description="Train an ensemble of seeds per setting, analyse every member at "
        "log-spaced snapshots and write report.md (with a short answer and its intervals), "
        "figures/*.png, models.csv, heads.csv and results.json to --out. Killed, the same "
        "command resumes. The default preset took 2.5 minutes on a 2-core CPU (8 seeds; "
        "--seeds 0-31 decides every setting in about 9).",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: 8 seeds x 5 settings (minutes on a CPU); full: 64 seeds x 36 cells "
        "(n_heads x weight decay x max_len x steps; for --device gpu); quick: a smoke run",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run for CI (= --preset quick)")
    p.add_argument(
        "--seeds", type=seeds_option, default=None,
        help="replace the preset's seeds: one seed (7), a list (0,1,5) or a range (0-31)",
    )  # fmt: skip
    p.add_argument(
        "--heads",
        type=heads_option,
        default=None,
        help="keep only the preset's cells with these head counts (2,4)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="scale the preset's training lengths so the shortest is this many steps",
    )
    _add_run_folder_args(p, "runs/reproduce")
    p.set_defaults(func=cmd_reproduce)


def add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train and analyse a grid of settings, each as one ensemble of seeds",
        description="Every combination of the --set values is one cell, trained as one "
        "ensemble of --seeds and analysed at steps N, 2N, 4N, ... (N = --first-snapshot) and "
        "the last. Writes models.csv, heads.csv, results.json, report.md and figures to --out. "
        "Killed at any moment, the same command resumes where it stopped. Knobs and their "
        "defaults: " + ", ".join(f"{k}={getattr(BASE, k):g}" if isinstance(getattr(BASE, k),
                                 float) else f"{k}={getattr(BASE, k)}" for k in KNOBS) + ".",
    )  # fmt: skip
    p.add_argument("--set", action="append", metavar="KNOB=V1,V2,...",
                   help="a knob and its values (repeat for more knobs), e.g. --set n_heads=2,4,8 "
                   "--set weight_decay=0,0.1; p2 is the share of 2s, bos is on/off")  # fmt: skip
    p.add_argument(
        "--seeds",
        type=seeds_option,
        default=list(SEEDS),
        help=f"seeds of every cell: 0-31, 0,1,5 or 7 (default {SEEDS[0]}-{SEEDS[-1]})",
    )
    _field_option(p, Cell, "steps", "training steps when --set steps=... is not given "
                  "(%(default)s)", type=_positive_int)  # fmt: skip
    for name, what in (("batch_size", "strings per step per model (%(default)s)"),
                       ("n_eval", "held-out strings analysed (%(default)s)"),
                       ("first_snapshot", "first analysed step; then every doubling and the "
                        "last (%(default)s)")):  # fmt: skip
        _field_option(p, SweepSpec, name, what, type=_positive_int)
    p.add_argument(
        "--no-subsets",
        action="store_true",
        help="skip the every-subset ablation (2^n_heads variants)",
    )
    _field_option(p, SweepSpec, "snapshot_every", "also analyse every N steps, e.g. to count "
                  "models that change class over a long run (0 = off; %(default)s)",
                  type=_non_negative_int)  # fmt: skip
    p.add_argument("--train-only", action="store_true",
                   help="train and keep every snapshot's parameters (cells/*/snapshots/), "
                   "analyse nothing: e.g. train on a GPU, then --reanalyze elsewhere")  # fmt: skip
    p.add_argument("--reanalyze", metavar="DIR",
                   help="recompute every snapshot of the sweep in DIR from its kept parameters "
                   "with this version's instruments, then rewrite its tables and report "
                   "(no training; the other sweep options are ignored)")  # fmt: skip
    _add_run_folder_args(p, "runs/sweep")
    g = p.add_argument_group("a sweep folder's state (these read DIR/sweep.json: no --set)")
    g.add_argument(
        "--status",
        metavar="DIR",
        default=None,
        help="print which cells of the sweep in DIR are done, running (host, pid, step, "
        "rate), waiting for their shorter twin or left, and an estimate of the time left "
        "from the step rates measured there; writes nothing; exit 0 (2 if DIR holds no "
        "sweep)",
    )
    g.add_argument(
        "--report-only",
        metavar="DIR",
        default=None,
        help="(re)write the report of DIR (models.csv, heads.csv, results.json, report.md, "
        "figures, COMPLETE) from its cells and train nothing; exit 2 if a cell is not done",
    )
    p.set_defaults(func=cmd_sweep)


def add_analyze_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="run every analysis instrument on a checkpoint (a summary, or JSON)",
        description="Head attribution, ablation, semantics, aggregation weights, attention "
        "statistics, interventions and linear fits of a saved model, on the fixed held-out "
        "strings. Prints a summary table per model (definitions: docs/method.md); --json or "
        "--out give every number.",
    )
    _add_checkpoint_args(p, default(SweepSpec, "n_eval"), ", as a sweep analyses")
    p.add_argument(
        "--member",
        type=_non_negative_int,
        default=None,
        help="for an ensemble checkpoint: analyse only this member (default all)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print every number as JSON instead of the summary tables",
    )
    p.add_argument("--out", default=None, help="write the JSON to this file")
    p.set_defaults(func=cmd_analyze)


def cmd_bench(a: argparse.Namespace) -> int:
    """Run bench/bench.py of a source checkout with the arguments that follow ``bench``."""
    script = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
    if not script.is_file():
        raise ValueError(f"{script} not found: the benchmark runs from a source checkout")
    return runpy.run_path(str(script), run_name="minicount_bench")["main"](a.bench_args)


def add_bench_parser(sub) -> None:
    # every argument after 'bench' goes to bench/bench.py (which has its own --help): with
    # prefix_chars="+" this parser reads none of them as its own options
    p = sub.add_parser(
        "bench",
        help="time minicount against PyTorch (bench/bench.py)",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (or an ensemble of seeds) and save a checkpoint",
        description="Train on Count01, printing held-out l-acc, s-acc and ROC AUC as it goes.",
        epilog="CPU threads: a training step runs on the thread count measured fastest on "
        "this machine (once, cached in ~/.cache/minicount/threads.json; 1 where a second "
        "thread does not pay). Set MINICOUNT_THREADS=N to choose it yourself.",
    )
    add_model_args(p)
    add_train_args(p)
    p.add_argument("--out", default="runs/model.npz", help="checkpoint path (%(default)s)")
    p.add_argument(
        "--fused-kernel",
        action="store_true",
        help="on the GPU, run the attention core as one fused CUDA kernel "
        "(TrainConfig.path='fused', saved in the checkpoint; fast/attention_cuda.py, checked "
        "against the textbook layers/attention.py)",
    )
    p.set_defaults(func=cmd_train)


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="print the metrics of a checkpoint on held-out strings",
        description="Evaluate a checkpoint on the fixed held-out set and the longer-length set.",
    )
    _add_checkpoint_args(p, default(DataConfig, "n_eval"))
    p.add_argument("--no-bos", action="store_true", help="evaluate without BOS")
    _field_option(p, DataConfig, "eval_seed", "(%(default)s)", type=_non_negative_int)
    p.set_defaults(func=cmd_eval)


def _add_checkpoint_args(p: argparse.ArgumentParser, n_eval: int, note: str = "") -> None:
    """eval's and analyze's: the checkpoint, the held-out strings' length and number, device."""
    p.add_argument("checkpoint", help="a .npz written by 'minicount train'")
    p.add_argument(
        "--max-len", type=_positive_int, default=None, help="default: the training max_len"
    )
    p.add_argument(
        "--n-eval", type=_positive_int, default=n_eval, help=f"held-out strings (%(default)s{note})"
    )
    _add_device_arg(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minicount",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_train_parser(sub)
    add_eval_parser(sub)
    add_reproduce_parser(sub)
    add_sweep_parser(sub)
    add_analyze_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (2 for bad input, with one line on stderr)."""
    argv = sys.argv[1:] if argv is None else [str(x) for x in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, MemoryError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        if isinstance(e, MemoryError):
            message = f"out of memory ({message}): ask for a smaller model, batch or ensemble"
        print(f"minicount {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minicount {args.command}: interrupted", file=sys.stderr)
        return 130
