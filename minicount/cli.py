"""Command line: ``python -m minicount {train,eval} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from .model import ModelConfig

DESCRIPTION = """\
minicount: a from-scratch transformer (hand-written backprop, NumPy or CuPy) that learns
Count01 (does a string over {0,1,2} hold more 1s than 0s?), and the study of how its
attention heads share the work.
"""


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum, or a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _seeds(text: str) -> list[int]:
    """'3' -> [3]; '0,1,5' -> [0, 1, 5]; '0-7' -> [0, ..., 7]; at most MAX_ENSEMBLE seeds,
    counted before a range is expanded."""
    from .limits import MAX_ENSEMBLE

    try:
        if "-" in text.strip("-"):
            lo, hi = (int(x) for x in text.split("-"))
            count = hi - lo + 1
        else:
            seeds = [int(s) for s in text.split(",")]
            lo, count = min(seeds), len(seeds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds look like 3, 0,1,5 or 0-7; got {text!r}") from None
    if lo < 0:
        raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {text!r}")
    if count < 1:
        raise argparse.ArgumentTypeError(f"a seed range lo-hi needs lo <= hi, got {text!r}")
    if count > MAX_ENSEMBLE:
        raise argparse.ArgumentTypeError(
            f"{count:,} seeds is over the limit of {MAX_ENSEMBLE} models in one run"
        )
    return list(range(lo, hi + 1)) if "-" in text.strip("-") else seeds


def _json_text(obj, **options) -> str:
    """obj as valid JSON: NaN and infinities (an undefined ROC AUC, say) become null."""

    def clean(x):
        if isinstance(x, float) and not np.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), allow_nan=False, **options)


@contextlib.contextmanager
def _signals_interrupt():
    """While the block runs, SIGTERM and SIGHUP stop it as Ctrl-C does (main thread only)."""
    import signal
    import threading

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
    d = ModelConfig()
    g = p.add_argument_group("model (defaults: the study's one-layer attention-only NoPE model)")
    g.add_argument(
        "--d-model", type=_positive_int, default=d.d_model, help="residual width (%(default)s)"
    )
    g.add_argument(
        "--n-heads", type=_positive_int, default=d.n_heads, help="heads per layer (%(default)s)"
    )
    g.add_argument(
        "--d-head", type=_positive_int, default=d.d_head, help="width per head (%(default)s)"
    )
    g.add_argument(
        "--n-layers", type=_positive_int, default=d.n_layers, help="blocks (%(default)s)"
    )
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
    g.add_argument("--d-mlp", type=_positive_int, default=d.d_mlp, help="MLP width (%(default)s)")


def model_config_from_args(a: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        d_model=a.d_model,
        n_heads=a.n_heads,
        d_head=a.d_head,
        n_layers=a.n_layers,
        n_ctx=a.n_ctx or 2 * a.max_len + 1,
        pos_emb=a.pos_emb,
        layernorm=a.layernorm,
        mlp=a.mlp,
        d_mlp=a.d_mlp,
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--steps", type=_non_negative_int, default=1000, help="optimiser steps (%(default)s)"
    )
    g.add_argument(
        "--batch-size", type=_positive_int, default=256, help="strings per step (%(default)s)"
    )
    g.add_argument("--lr", type=_float, default=3e-3, help="AdamW learning rate (%(default)s)")
    g.add_argument(
        "--weight-decay", type=_float, default=0.0, help="AdamW weight decay (%(default)s)"
    )
    g.add_argument(
        "--warmup", type=_non_negative_int, default=0, help="linear warm-up steps (%(default)s)"
    )
    g.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule after warm-up (%(default)s)",
    )
    g.add_argument(
        "--grad-clip", type=_float, default=0.0, help="max gradient norm per model, 0 = off"
    )
    g.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="default 0; e.g. 7 (one seed), 0,1,5 (a list) or 0-7 (a range); several seeds "
        "train an ensemble, one model per seed",
    )
    g.add_argument(
        "--data-seed",
        type=_non_negative_int,
        default=None,
        help="every model of an ensemble sees the same batches, drawn from this seed "
        "(one batch per step instead of one per model: faster for big ensembles)",
    )
    g.add_argument(
        "--n-eval",
        type=_positive_int,
        default=2048,
        help="held-out strings for the evaluations (%(default)s)",
    )
    g.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=100,
        help="evaluate every N steps (%(default)s; 0 = only at the end)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating-point precision of parameters and activations (%(default)s; float64 "
        "for gradient checks)",
    )
    g.add_argument(
        "--device",
        choices=("cpu", "gpu", "auto"),
        default="cpu",
        help="cpu: NumPy (the default); gpu: CuPy on a CUDA GPU; auto: the GPU when CuPy "
        "finds one, else the CPU",
    )
    g.add_argument(
        "--checkpoint-every",
        type=_non_negative_int,
        default=0,
        help="also save the checkpoint every N steps (default 0: at each evaluation)",
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
    d.add_argument(
        "--max-len", type=_positive_int, default=32, help="longest training string (%(default)s)"
    )
    d.add_argument("--no-bos", action="store_true", help="leave out the BOS token")
    d.add_argument(
        "--probs",
        type=_float,
        nargs=3,
        metavar=("P0", "P1", "P2"),
        default=[1 / 3, 1 / 3, 1 / 3],
        help="symbol probabilities (uniform)",
    )


def train_config_from_args(a: argparse.Namespace):
    from .train import TrainConfig

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
    """(ModelConfig, TrainConfig) of the run saved in a.resume, with the options that may change
    on resume taken from the command line; any other option given must agree with the run."""
    from dataclasses import replace

    from .checkpoint import load_checkpoint
    from .train import RESUMABLE_FIELDS, TrainConfig

    ck = load_checkpoint(a.resume)
    if "train" not in ck["info"]:
        raise ValueError(f"{a.resume} holds no training state to resume from")
    try:
        tc = TrainConfig.from_dict(ck["info"]["train"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{a.resume}: damaged training settings ({e})") from None
    tc = replace(tc, **{f: getattr(a, f) for f in RESUMABLE_FIELDS if f in given})
    asked = {**model_config_from_args(a).to_dict(), **train_config_from_args(a).to_dict()}
    saved = {**ck["config"].to_dict(), **tc.to_dict()}
    for dest in sorted(given - set(RESUMABLE_FIELDS) - {"out", "resume"}):
        field = "bos" if dest == "no_bos" else dest
        if asked[field] != saved[field]:
            raise ValueError(
                f"--{dest.replace('_', '-')} asks for {field}={asked[field]!r} but "
                f"the run in {a.resume} has {saved[field]!r}; a resumed run keeps "
                f"its settings (only {', '.join(RESUMABLE_FIELDS)} may change)"
            )
    return ck["config"], tc


def cmd_train(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from .backend import resolve_device
    from .checkpoint import check_writable
    from .train import train_with_config, versions

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
    print(_json_text(result))
    print(f"checkpoint: {out}", file=sys.stderr)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .backend import to_device
    from .checkpoint import load_checkpoint
    from .data import DataConfig, eval_set
    from .metrics import evaluate

    ck = load_checkpoint(a.checkpoint)  # refuses NaN or inf parameters
    config, info = ck["config"], ck["info"]
    train_info = info.get("train", {})
    max_len = a.max_len or train_info.get("max_len", 32)
    bos = train_info.get("bos", True) if not a.no_bos else False
    data = DataConfig(max_len=max_len, bos=bos, n_eval=a.n_eval, eval_seed=a.eval_seed)
    _check_eval_memory(ck, a.n_eval, 2 * max_len + int(bos))
    params = to_device(ck["params"], a.device)
    result = {}
    for name, long in (("held_out", False), ("long", True)):
        tokens, targets, mask = eval_set(data, long=long)
        if config.pos_emb and tokens.shape[-1] > config.n_ctx:
            continue  # positional embeddings stop at n_ctx
        with np.errstate(all="ignore"):  # huge but finite weights: metrics say it
            m = evaluate(params, tokens, targets, mask, config)
        result[name] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()}
    print(_json_text(result, indent=2))
    return 0


def _check_eval_memory(ck: dict, n_eval: int, seq_len: int) -> None:
    """Refuse (naming the limit) an evaluation that needs more memory than there is."""
    from . import limits
    from .model import n_members

    M = n_members(ck["params"]) or 1
    need = limits.eval_bytes(ck["config"], M, n_eval, seq_len)
    limits.check_memory(need, f"evaluating {M} model(s) on {n_eval} strings of {seq_len}")


def _heads(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    try:
        heads = [int(h) for h in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"heads look like 4 or 1,2,4,8; got {text!r}") from None
    if not heads or any(h < 1 for h in heads):
        raise argparse.ArgumentTypeError(f"head counts must be >= 1, got {text!r}")
    return heads


def _sweep_run(spec, a: argparse.Namespace) -> int:
    from .sweep import run_sweep

    out = Path(a.out)
    run_sweep(
        spec,
        out,
        device=a.device,
        force=a.force,
        progress=not a.quiet,
        command=" ".join(["python -m minicount"] + a.argv),
        threads=a.threads or None,
        figures=not a.no_figures,
        train_path=_path(a),
    )
    print(out / "report.md")
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from .study import preset

    spec = preset("quick" if a.quick else a.preset, seeds=a.seeds, heads=a.heads, steps=a.steps)
    return _sweep_run(spec, a)


def cmd_sweep(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from .sweep import BASE, SweepSpec, cell_names, grid, parse_knob

    assignments = {}
    for text in a.set or []:
        name, values = parse_knob(text)
        if name in assignments:
            raise ValueError(f"--set {name} is given twice")
        assignments[name] = values
    if "steps" not in assignments:
        assignments["steps"] = [a.steps]
    cells = grid(assignments, base=replace(BASE))
    spec = SweepSpec(
        cells=tuple(cells),
        names=tuple(cell_names(cells)),
        seeds=tuple(a.seeds),
        batch_size=a.batch_size,
        n_eval=a.n_eval,
        first_snapshot=a.first_snapshot,
        subsets=not a.no_subsets,
    )
    return _sweep_run(spec, a)


def cmd_analyze(a: argparse.Namespace) -> int:
    """Print the analysis, or write it to --out atomically, holding a lock on it meanwhile."""
    from .safeio import atomic_write, exclusive_lock, remove_stale_temporaries

    if a.out is not None:
        with exclusive_lock(check_output(a.out), what="output"):
            remove_stale_temporaries(a.out)  # of killed writes: a live one would hold the lock
            text = _analysis_json(a)
            atomic_write(a.out, text)
        print(a.out)
    elif a.json:
        print(_analysis_json(a))
    else:
        from .report import analysis_summary

        print(analysis_summary(json.loads(_analysis_json(a))))
    return 0


def check_output(path) -> Path:
    """The regular file that --out names (symlinks followed), or an error if it cannot be one."""
    from .safeio import resolve_target

    if not str(path):
        raise ValueError("--out is empty: name a file")
    return resolve_target(path)


def _check_logits_finite(params: dict, tokens, config, member: int) -> None:
    """Refuse a model whose (finite but huge) weights overflow its logits: the instruments'
    least-squares fits would fail inside LAPACK."""
    from .model import forward

    with np.errstate(all="ignore"):
        logits = forward(params, tokens[:64], config)
    if not np.isfinite(logits).all():
        raise ValueError(f"model {member}'s logits overflow (weights too large); cannot analyse it")


def _analysis_json(a: argparse.Namespace) -> str:
    """The analysis of a.checkpoint as JSON text."""
    from .analysis import analyze_ensemble, analyze_model
    from .analysis.attribution import exactness_problem
    from .backend import to_device
    from .checkpoint import load_checkpoint
    from .data import DataConfig, eval_set
    from .model import members, stack

    ck = load_checkpoint(a.checkpoint)
    config, train_info = ck["config"], ck["info"].get("train", {})
    data = DataConfig(
        max_len=a.max_len or train_info.get("max_len", 32),
        bos=train_info.get("bos", True),
        n_eval=a.n_eval,
    )
    _check_eval_memory(ck, a.n_eval, data.max_len + int(data.bos))
    tokens, targets, mask = eval_set(data)
    models = members(ck["params"])
    if a.member is not None and a.member >= len(models):
        raise ValueError(f"--member {a.member}: the checkpoint holds {len(models)} model(s)")
    chosen = range(len(models)) if a.member is None else [a.member]
    for i in chosen:
        _check_logits_finite(models[i], tokens, config, i)
    if exactness_problem(config) is None:  # every chosen member in one pass
        stacked = stack([models[i] for i in chosen])
        analyses = analyze_ensemble(to_device(stacked, a.device), tokens, targets, mask, config)
    else:
        analyses = [analyze_model(to_device(models[i], a.device), tokens, targets, mask, config)
                    for i in chosen]  # fmt: skip
    result = {
        "checkpoint": str(a.checkpoint),
        "n_eval": a.n_eval,
        "max_len": data.max_len,
        "members": [{"member": i, **r} for i, r in zip(chosen, analyses, strict=True)],
    }
    return _json_text(result, indent=1)


def _add_run_folder_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument(
        "--device",
        choices=("cpu", "gpu", "auto"),
        default="cpu",
        help="where to train and analyse (%(default)s; auto: the GPU if CuPy sees one)",
    )
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


def add_reproduce_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="the study: a preset sweep that trains, analyses and writes a report",
        description="Train an ensemble of seeds per setting, analyse every member at "
        "log-spaced snapshots and write report.md (with a short answer and its intervals), "
        "figures/*.png, models.csv, heads.csv and results.json to --out. Killed, the same "
        "command resumes. The default preset takes about 5 minutes on a 2-core CPU.",
    )
    p.add_argument(
        "--preset",
        choices=("default", "full", "quick"),
        default="default",
        help="default: 8 seeds x 5 settings (minutes on a CPU); full: 64 seeds x 24 cells "
        "(n_heads x weight decay x max_len x steps; for --device gpu); quick: a smoke run",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run for CI (= --preset quick)")
    p.add_argument(
        "--seeds", type=_seeds, default=None,
        help="replace the preset's seeds: one seed (7), a list (0,1,5) or a range (0-31)",
    )  # fmt: skip
    p.add_argument(
        "--heads",
        type=_heads,
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
    from .sweep import BASE, KNOBS

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
        type=_seeds,
        default=list(range(8)),
        help="seeds of every cell: 0-31, 0,1,5 or 7 (default 0-7)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=800,
        help="training steps when --set steps=... is not given (%(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=128,
        help="strings per step per model (%(default)s)",
    )
    p.add_argument(
        "--n-eval", type=_positive_int, default=1024, help="held-out strings analysed (%(default)s)"
    )
    p.add_argument(
        "--first-snapshot",
        type=_positive_int,
        default=25,
        help="first analysed step; then every doubling and the last (%(default)s)",
    )
    p.add_argument(
        "--no-subsets",
        action="store_true",
        help="skip the every-subset ablation (2^n_heads variants)",
    )
    _add_run_folder_args(p, "runs/sweep")
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
    p.add_argument("checkpoint", help="a .npz written by 'minicount train'")
    p.add_argument(
        "--member",
        type=_non_negative_int,
        default=None,
        help="for an ensemble checkpoint: analyse only this member (default all)",
    )
    p.add_argument(
        "--max-len", type=_positive_int, default=None, help="default: the training max_len"
    )
    p.add_argument(
        "--n-eval", type=_positive_int, default=1024, help="held-out strings (%(default)s)"
    )
    p.add_argument(
        "--device",
        choices=("cpu", "gpu", "auto"),
        default="cpu",
        help="cpu: NumPy (the default); gpu: CuPy; auto: the GPU when CuPy finds one",
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
    import runpy

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minicount",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser(
        "eval",
        help="print the metrics of a checkpoint on held-out strings",
        description="Evaluate a checkpoint on the fixed held-out set and the longer-length set.",
    )
    p.add_argument("checkpoint", help="a .npz written by 'minicount train'")
    p.add_argument(
        "--max-len", type=_positive_int, default=None, help="default: the training max_len"
    )
    p.add_argument("--no-bos", action="store_true", help="evaluate without BOS")
    p.add_argument(
        "--n-eval", type=_positive_int, default=2048, help="held-out strings (%(default)s)"
    )
    p.add_argument("--eval-seed", type=_non_negative_int, default=12345, help="(%(default)s)")
    p.add_argument(
        "--device",
        choices=("cpu", "gpu", "auto"),
        default="cpu",
        help="cpu: NumPy (the default); gpu: CuPy; auto: the GPU when CuPy finds one",
    )
    p.set_defaults(func=cmd_eval)

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
