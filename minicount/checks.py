"""The checks of what a caller hands in, in one place: whole numbers, bounded numbers, flags,
choices, symbol probabilities and seeds, each refused with a one-line ValueError that names
the field; the same checks as argparse types for the command line (where a bad option is
argparse's one-line usage error, exit code 2); and the checks of a whole training run
(context length, memory) before it starts.

Called at the public entry points: the ``__post_init__`` of ModelConfig, DataConfig,
TrainConfig and the sweep's Cell and SweepSpec, ``train_with_config`` and the options of
``python -m minicount``. It touches nothing: every function reads its argument and returns
it (converted) or raises. It imports only NumPy, argparse and minicount.limits, so that every
other module may import it.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from . import limits


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
