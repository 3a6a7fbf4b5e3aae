"""Command line: ``python -m minicount {train,eval,reproduce,sweep,analyze,bench} ...``
(``--help`` on each): the options are parsed by minicount/options.py, and each command here
hands them to the module that does the work.

It writes only where --out (or --resume) points, prints results on stdout, and reports bad
input as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from .analysis.ensemble import analyze_members
from .backend import resolve_device, to_device
from .checkpoint import check_writable, load_checkpoint
from .data import DataConfig, context_length, eval_set
from .metrics import checkpoint_data, evaluate_held_out
from .model import ModelConfig, members
from .options import add_model_args, add_train_args, build_parser, default
from .record import json_text, versions
from .safeio import atomic_write, exclusive_lock, remove_stale_temporaries, resolve_target
from .study.analysis_text import analysis_summary
from .study.presets import preset
from .study.run import COMPLETE, reanalyze, run_sweep
from .study.spec import sweep_spec
from .study.workers import parse_worker, report_only, run_worker, status
from .train import TrainConfig, saved_run, train_with_config


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
    """(ModelConfig, TrainConfig, SavedRun) to resume a.resume with: the run's own settings,
    with the options given on the command line put over them, and the checkpoint read once
    (train reads no file again). Whether they may change is decided where every resume is,
    in train.check_same_run: only RESUMABLE_FIELDS may."""
    saved = saved_run(a.resume)
    asked = {"bos" if dest == "no_bos" else dest for dest in given}
    model = {k: v for k, v in model_config_from_args(a).to_dict().items() if k in asked}
    train = {k: v for k, v in train_config_from_args(a).to_dict().items() if k in asked}
    return replace(saved.ck["config"], **model), replace(saved.tc, **train), saved


def cmd_train(a: argparse.Namespace) -> int:
    if a.resume:
        given = given_train_options(a.argv[1:])
        config, tc, resume = resumed_settings(a, given)
        if a.fused_kernel:  # a path may change on resume (only rounding differs)
            tc = replace(tc, path="fused")
        out = check_writable(a.out if "out" in given else a.resume)
    else:
        config, tc, resume = model_config_from_args(a), train_config_from_args(a), None
        out = check_writable(a.out)
    try:
        with _signals_interrupt(), np.errstate(over="ignore", invalid="ignore"):
            # (errstate: a NonFiniteError says it better than NumPy's warnings)
            params, history = train_with_config(
                config, tc, progress=True, checkpoint=out, resume=resume
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
    spec = preset(
        "quick" if a.quick else a.preset,
        seeds=a.seeds,
        heads=a.heads,
        shortest_steps=a.shortest_steps,
    )
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
        default_steps=a.default_steps,
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


def cmd_bench(a: argparse.Namespace) -> int:
    """Run bench/bench.py of a source checkout with the arguments that follow ``bench``."""
    script = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
    if not script.is_file():
        raise ValueError(f"{script} not found: the benchmark runs from a source checkout")
    return runpy.run_path(str(script), run_name="minicount_bench")["main"](a.bench_args)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "reproduce": cmd_reproduce,
            "sweep": cmd_sweep, "analyze": cmd_analyze, "bench": cmd_bench}  # fmt: skip


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
        return COMMANDS[args.command](args)
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
