"""The command line's options: the parser of every subcommand and the argparse types its
options use (``python -m minicount COMMAND --help``). minicount/cli.py runs the commands.

Every option's default is read from the dataclass field it sets (ModelConfig, TrainConfig,
DataConfig, the sweep's Cell and SweepSpec: ``default(cls, name)``), and every check of an
option is its field's check (minicount/checks.py), made here as an argparse type: a bad
option is argparse's one-line usage error, exit code 2. Parsing runs nothing.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

from . import limits
from .backend import DEVICES
from .checks import check_int
from .data import DataConfig
from .model import ModelConfig
from .optim import SCHEDULES
from .study.presets import PRESETS
from .study.spec import BASE, KNOBS, SEEDS, Cell, SweepSpec
from .train import DTYPES, TrainConfig

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


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The training options, one call per TrainConfig field (a long list, read as a table)."""
    g = p.add_argument_group("training")

    def option(name, help, **kw):
        _field_option(g, TrainConfig, name, help, **kw)

    option(
        "steps",
        "optimiser steps: AdamW updates of every model, warm-up included; with --resume the "
        "new total (%(default)s)",
        type=_non_negative_int,
    )
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
    _field_option(g, DataConfig, "n_eval", "held-out strings for the evaluations (%(default)s)",
                  type=_positive_int)  # fmt: skip
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
    _field_option(d, DataConfig, "max_len", "longest training string (%(default)s)",
                  type=_positive_int)  # fmt: skip
    d.add_argument("--no-bos", action="store_true", help="leave out the BOS token")
    probs = " ".join(f"{p:.3g}" for p in default(DataConfig, "probs"))
    _field_option(d, DataConfig, "probs", f"symbol probabilities ({probs})",
                  type=number_option, nargs=3, metavar=("P0", "P1", "P2"))  # fmt: skip


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
        dest="shortest_steps",
        metavar="N",
        type=_positive_int,
        default=None,
        help="scale the training steps of every cell of the preset by one factor, so that its "
        "shortest cell trains N steps (default: the preset's own steps)",
    )
    _add_run_folder_args(p, "runs/reproduce")


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
    p.add_argument(
        "--steps",
        dest="default_steps",
        metavar="N",
        type=_positive_int,
        default=default(Cell, "steps"),
        help="training steps of every cell when no --set steps=... is given (%(default)s)",
    )
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


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="print the metrics of a checkpoint on held-out strings",
        description="Evaluate a checkpoint on the fixed held-out set and the longer-length set.",
    )
    _add_checkpoint_args(p, default(DataConfig, "n_eval"))
    p.add_argument("--no-bos", action="store_true", help="evaluate without BOS")
    _field_option(p, DataConfig, "eval_seed", "(%(default)s)", type=_non_negative_int)


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
