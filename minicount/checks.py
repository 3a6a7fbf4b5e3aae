"""The checks of settings, in one place, each refusing with a one-line ValueError that names
the field or argument: whole numbers, bounded numbers, flags, choices, symbol probabilities
and seeds. The ``__post_init__`` of ModelConfig, DataConfig, TrainConfig and the sweep's
Cell and SweepSpec call these, so that code downstream of a dataclass trusts its fields.

The other checks live with what they check: the model's inputs in minicount/inputs.py,
resume judgement in minicount/train.py (``check_same_run``, ``check_intact``), the memory
of a run in minicount/limits.py (``fits``), and the command line's option types in
minicount/options.py (the parser of minicount/cli.py).

It touches nothing: every function reads its arguments and returns them (converted) or
raises. It imports only NumPy and minicount.limits.
"""

from __future__ import annotations

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
    """One seed or a list of them as a tuple of whole numbers >= 0: at least one, no more
    than limits.MAX_ENSEMBLE (the models one run may train), and none repeated (two members
    with one seed would be the same model)."""
    seeds = (seeds,) if isinstance(seeds, (int, np.integer)) else seeds
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a list of whole numbers >= 0, got {seeds!r}")
    seeds = tuple(check_int("seed", s, 0) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    limits.check_ensemble(len(seeds))
    if len(set(seeds)) != len(seeds):
        raise ValueError("a seed is repeated")
    return seeds
