"""The checks of what a caller hands in, in one place, each refusing with a one-line
ValueError that names the field or argument:

    settings      whole numbers, bounded numbers, flags, choices, symbol probabilities and
                  seeds: the ``__post_init__`` of ModelConfig, DataConfig, TrainConfig and
                  the sweep's Cell and SweepSpec call these
    a whole run   context length and memory, before ``train_with_config`` starts (and
                  the memory of a batch, and of evaluating a checkpoint)
    resuming      whether a checkpoint is the same run as the one asked for, and intact:
                  the one judgement of every resume (``train.resume_run``, which the
                  command line's ``train --resume`` goes through too)
    model inputs  parameters, tokens, targets, masks and hooks against a ModelConfig, for
                  ``model.forward``, ``loss_and_grads``, ``metrics.evaluate``, checkpoints
    command line  the same checks as argparse types (a bad option is argparse's one-line
                  usage error, exit code 2)

It touches nothing: every function reads its arguments and returns them (converted) or
raises. It imports only NumPy, argparse, minicount.limits, minicount.backend and
minicount.names (the parameter shapes and hook names of a config), so that every module
above the bottom floor may import it.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from . import limits
from .backend import device_of
from .names import hook_names, n_members, param_shapes


def _must(name: str) -> str:
    """'lr must' (or 'must' for an unnamed command-line value: argparse names the option)."""
    return f"{name} must" if name else "must"


def check_int(name: str, value, minimum: int) -> int:
    """value as an int, or a ValueError naming the field and its lower limit."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{_must(name)} be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{_must(name)} be >= {minimum}, got {value}")
    return int(value)


def check_number(
    name: str,
    value,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """value as a finite float within its limits, or a ValueError naming them."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{_must(name)} be a number, got {value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{_must(name)} be a finite number in {bounds}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """value as a bool, or a ValueError: True or False only (not 1, not 'yes')."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_must(name)} be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value, choices):
    """value itself if it is one of choices, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    return value


def check_probs(probs) -> np.ndarray:
    """Symbol probabilities as a float64 [3] array, or a ValueError saying what is wrong."""
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"probs must be 3 numbers P(0), P(1), P(2), got {probs!r}") from None
    if p.shape != (3,) or not np.isfinite(p).all() or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"probs must be 3 non-negative numbers summing to 1, got {probs!r}")
    if p[1] == 0:
        raise ValueError("probs: P(1) must be > 0, or no string has more 1s than 0s")
    return p


def check_seeds(seeds) -> tuple[int, ...]:
    """One seed or a list of them as a tuple of whole numbers >= 0: at least one, and no more
    than limits.MAX_ENSEMBLE (the models one run may train)."""
    seeds = (seeds,) if isinstance(seeds, (int, np.integer)) else seeds
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a list of whole numbers >= 0, got {seeds!r}")
    seeds = tuple(check_int("seed", s, 0) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    limits.check_ensemble(len(seeds))
    return seeds


# ----------------------------------------------------------------------------- a whole run


def check_fits(config, tc) -> None:
    """Refuse a model (ModelConfig) whose context cannot hold the training strings of tc."""
    if config.pos_emb and config.n_ctx < tc.max_len + int(tc.bos):
        raise ValueError(
            f"n_ctx={config.n_ctx} is too small for max_len={tc.max_len} "
            f"(needs at least {tc.max_len + int(tc.bos)})"
        )


def check_batch_memory(n_strings: int, n_pos: int) -> None:
    """Refuse (ValueError naming the limit) a batch of n_strings x n_pos too big for memory:
    tokens, targets, mask and the sampler's work arrays, about 80 bytes a position."""
    limits.check_memory(80 * n_strings * n_pos, f"a batch of {n_strings} strings of {n_pos}")


def check_training_memory(config, tc) -> None:
    """Refuse (one-line ValueError naming the limit) a run that needs more memory than there is."""
    need = limits.training_bytes(
        config,
        len(tc.seeds),
        tc.batch_size,
        tc.max_len + int(tc.bos),
        tc.n_eval,
        np.dtype(tc.dtype).itemsize,
    )
    limits.check_memory(need, f"training {len(tc.seeds)} model(s) on batches of {tc.batch_size}")


def check_sweep_memory(spec, device: str) -> None:
    """Refuse (one line naming the cell and the limit) a sweep (sweep.SweepSpec) with a cell
    whose ensemble would not fit in 80% of the device's memory."""
    limit = limits.available_bytes(device)
    for name, cell in zip(spec.names, spec.cells, strict=True):
        need = limits.training_bytes(
            cell.model_config(), len(spec.seeds), spec.batch_size, cell.max_len + 1, spec.n_eval
        )
        if need > 0.8 * limit:
            raise ValueError(
                f"cell '{name}' with {len(spec.seeds)} seeds needs about {need / 2**30:.1f} GiB, "
                f"more than 80% of the {limit / 2**30:.1f} GiB this {device} has: use fewer "
                "seeds or a smaller batch"
            )


def check_eval_memory(ck: dict, n_eval: int, seq_len: int) -> None:
    """Refuse (naming the limit) evaluating the models of checkpoint ck (``load_checkpoint``)
    on n_eval strings of seq_len positions when it needs more memory than there is."""
    M = n_members(ck["params"]) or 1
    need = limits.eval_bytes(ck["config"], M, n_eval, seq_len)
    limits.check_memory(need, f"evaluating {M} model(s) on {n_eval} strings of {seq_len}")


# ----------------------------------------------------------------------------- resuming a run

# TrainConfig fields that may differ when a run is resumed: none of them changes the
# parameters of the steps both runs take (``steps`` only without a cosine schedule)
RESUMABLE_FIELDS = ("steps", "device", "eval_every", "checkpoint_every", "path", "schedule_steps")


def _fields_that_differ(a: dict, b: dict, skip=()) -> list[str]:
    return [
        f"{k}={a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in skip and a.get(k) != b.get(k)
    ]


def check_same_run(path, ck: dict, saved, config, tc):
    """Refuse to resume the run ck (saved with the settings ``saved``) as config and tc unless
    it is the same run: the same model, and only RESUMABLE_FIELDS changed (``steps`` not
    under a cosine schedule, whose shape it sets)."""
    if ck["config"] != config:
        diff = _fields_that_differ(ck["config"].to_dict(), config.to_dict())
        raise ValueError(f"{path} is a run of another model ({', '.join(diff)}; checkpoint vs now)")
    diff = _fields_that_differ(saved.to_dict(), tc.to_dict(), skip=RESUMABLE_FIELDS)
    if tc.schedule == "cosine" and tc.horizon != saved.horizon:
        diff.append(f"horizon {saved.horizon} vs {tc.horizon}, which reshapes the cosine schedule")
    if diff:
        raise ValueError(
            f"{path} was trained with other settings ({', '.join(diff)}; checkpoint "
            f"vs now); only {', '.join(RESUMABLE_FIELDS)} may change on resume"
        )


def check_intact(path, ck: dict, tc) -> None:
    """Refuse a checkpoint whose step, history, generator states or parameters disagree."""
    info, step, history = ck["info"], ck["info"]["step"], ck["info"]["history"]
    if (
        not isinstance(step, int)
        or step != ck["opt_state"]["step"]
        or not isinstance(history, dict)
        or len(history.get("loss", ())) != step
        or len(history.get("step", ())) != step
    ):
        raise ValueError(f"{path}: step, optimiser step and history do not agree")
    if step > tc.steps:
        raise ValueError(f"{path} is at step {step}, beyond steps={tc.steps}: ask for more steps")
    if not isinstance(info["rng_states"], list) or len(info["rng_states"]) != len(tc.data_seeds):
        raise ValueError(f"{path}: expected {len(tc.data_seeds)} data-generator states")
    bad = [
        k
        for k, v in ck["params"].items()
        if v.dtype != np.dtype(tc.dtype) or not np.isfinite(v).all()
    ]
    if bad:
        raise ValueError(f"{path}: parameters {bad} are not finite {tc.dtype}; cannot resume")


# ----------------------------------------------------------------------------- model inputs


def check_params(params: dict, config) -> int | None:
    """Check params against config; returns M for an ensemble, None for one model.

    Every name of ``param_shapes(config)`` must be there (and nothing else), each a floating
    array of its shape, or of [M, *shape] with the same M for all, all on one device.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of arrays, got {type(params).__name__}")
    expected = param_shapes(config)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"params do not match the config: missing {missing}, unexpected {extra}")
    leading, devices = set(), set()
    for name, shape in expected.items():
        a = params[name]
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise ValueError(f"params[{name!r}] must be an array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"params[{name!r}] must be floating point, got dtype {a.dtype}")
        lead = a.ndim - len(shape)
        if lead not in (0, 1) or tuple(a.shape[lead:]) != shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(a.shape)}; the config needs "
                f"{shape} (or [M, *{shape}] for an ensemble)"
            )
        leading.add(tuple(a.shape[:lead]))
        devices.add(device_of(a))
    if len(leading) > 1:
        raise ValueError(
            f"params disagree on the model axis: leading axes {sorted(leading)} "
            "(one model: none; an ensemble of M: [M] on every array)"
        )
    if len(devices) > 1:
        raise ValueError("params are spread over cpu and gpu: move them with backend.to_device")
    (lead,) = leading
    return lead[0] if lead else None


def check_tokens(tokens, config, params: dict | None = None):
    """tokens as an array [..., B, T] of ids in 0..d_vocab-1 on the params' device.

    Ids are range-checked because an out-of-range id would not fail later: it would give an
    all-zero one-hot row (and CuPy indexing wraps instead of raising).
    """
    if not hasattr(tokens, "dtype"):
        try:
            tokens = np.asarray(tokens)
        except (TypeError, ValueError):
            raise ValueError("tokens must be an integer array [B, T]") from None
    if tokens.ndim < 2 or tokens.size == 0:
        raise ValueError(
            f"tokens must be [B, T] (or [M, B, T]) with B, T >= 1, got shape {tuple(tokens.shape)}"
        )
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= config.d_vocab:
        raise ValueError(f"token ids must lie in 0..{config.d_vocab - 1}, got {lo}..{hi}")
    if config.pos_emb and tokens.shape[-1] > config.n_ctx:
        raise ValueError(f"sequence length {tokens.shape[-1]} exceeds n_ctx={config.n_ctx}")
    if params is not None:
        M = check_params(params, config)
        if M is not None and tokens.ndim > 2 and tokens.shape[:-2] != (M,):
            raise ValueError(
                f"tokens {tuple(tokens.shape)} for an ensemble of {M} must be "
                f"[B, T] (shared) or [{M}, B, T]"
            )
        if device_of(tokens) != device_of(params["embed.W_E"]):
            raise ValueError(
                f"tokens are on the {device_of(tokens)} but params on the "
                f"{device_of(params['embed.W_E'])}: move them with backend.to_device"
            )
    return tokens


def check_hooks(hooks, config) -> dict:
    """hooks as a dict of callables under known names (a misspelt one would do nothing)."""
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise ValueError(f"hooks must be a dict {{name: fn}}, got {type(hooks).__name__}")
    unknown = sorted(set(hooks) - set(hook_names(config)))
    if unknown:
        raise ValueError(f"unknown hook names {unknown}; see model.hook_names(config)")
    for name, fn in hooks.items():
        if not callable(fn):
            raise ValueError(f"hook {name!r} must be a function activation -> activation")
    return {name: _shape_checked(name, fn) for name, fn in hooks.items()}


def _shape_checked(name: str, fn):
    """fn, refusing (ValueError naming the hook) a result that is not an array of its input's
    shape: a wrong one would surface later as NumPy's broadcasting words, or not at all."""

    def hook(a):
        out = fn(a)
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(a.shape):
            got = f"shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"hook {name!r} must return an array of its input's shape "
                f"{tuple(a.shape)}, got {got}"
            )
        return out

    return hook


def check_targets(targets, mask, tokens, params: dict, config):
    """Check targets [..., B, T, V] (in [0, 1]) and mask [..., B, T] (bool, some True)."""
    B, T = tokens.shape[-2:]
    M = n_members(params)
    leads = {(), tuple(tokens.shape[:-2])} | ({(M,)} if M else set())
    for name, a, tail in (("targets", targets, (B, T, config.d_vocab)), ("mask", mask, (B, T))):
        lead = a.ndim - len(tail) if hasattr(a, "dtype") else -1
        if lead < 0 or tuple(a.shape[lead:]) != tail or tuple(a.shape[:lead]) not in leads:
            shape = tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
            raise ValueError(
                f"{name} must be an array [..., {', '.join(map(str, tail))}] "
                f"to go with tokens {tuple(tokens.shape)}, got {shape}"
            )
        if device_of(a) != device_of(tokens):
            raise ValueError(
                f"{name} is on the {device_of(a)} but tokens are on the {device_of(tokens)}"
            )
    if not np.issubdtype(targets.dtype, np.floating):
        raise ValueError(f"targets must be floating point, got dtype {targets.dtype}")
    if not (float(targets.min()) >= 0.0 and float(targets.max()) <= 1.0):
        raise ValueError("targets must lie in [0, 1] (and not be NaN)")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool (True at real positions), got dtype {mask.dtype}")
    if not bool(mask.any(axis=(-2, -1)).all()):
        raise ValueError("mask marks no real position: the loss would be 0/0")


def check_batch(tokens, targets, mask, params: dict, config) -> None:
    """ValueError saying what is wrong if tokens [..., B, T], targets [..., B, T, V] and mask
    [..., B, T] (host arrays) do not make a batch for params."""
    tokens = check_tokens(tokens, config)
    check_targets(targets, mask, tokens, params, config)


# ----------------------------------------------------------------------------- command line


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
