"""Statistics over seeds that fit their quantities.

    mean_ci          mean with a percentile-bootstrap 95% interval (accuracies, differences,
                     proportions, counts per model): the spread is over seeds, one value each
    log_summary      geometric mean, median and interquartile range of positive ratios
                     (w_01, w_02), computed on the log scale where ratios are symmetric
    Interval         a number with its interval, and how it stands against a cut-off

The bootstrap resamples seeds with replacement (seeded, so a report is reproducible); with
very few seeds its interval is too narrow, which is why the study asks for eight or more.

Pure: the bootstrap draws from a Generator seeded here, so one input gives one interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_BOOT = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (level) interval over n values; nan when there are none."""

    value: float
    low: float
    high: float
    n: int

    def above(self, cut: float) -> bool | None:
        """True when the whole interval is above ``cut``, False when it is wholly at or below,
        None when the interval straddles it (the data cannot tell)."""
        if self.n == 0 or math.isnan(self.value):
            return None
        if self.low > cut:
            return True
        if self.high <= cut:
            return False
        return None

    def fmt(self, digits: int = 3, pct: bool = False) -> str:
        """'0.912 [0.871, 0.950]' (or '91% [87%, 95%]'); '–' with no values."""
        if self.n == 0 or math.isnan(self.value):
            return "–"
        if pct:
            return f"{self.value:.0%} [{self.low:.0%}, {self.high:.0%}]"
        if self.n == 1:
            return f"{self.value:.{digits}f} (1 seed)"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict:
        clean = lambda x: None if math.isnan(x) else float(x)  # noqa: E731
        return {"value": clean(self.value), "low": clean(self.low), "high": clean(self.high),
                "n": self.n}  # fmt: skip


def _finite(values) -> np.ndarray:
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def bootstrap_means(v: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of v [n]: [n_boot]."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))  # [n_boot, n]
    return v[idx].mean(axis=1)  # [n_boot]


def mean_ci(values, *, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The mean of the finite values (None and nan skipped) with a percentile-bootstrap
    interval; a single value gives a zero-width interval, no values give nan."""
    v = _finite(values)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if v.size == 1 or np.all(v == v[0]):
        return Interval(mean, mean, mean, int(v.size))
    boots = bootstrap_means(v, n_boot=n_boot, seed=seed)
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return Interval(mean, float(low), float(high), int(v.size))


@dataclass(frozen=True)
class LogSummary:
    """Positive ratios summarised on the log scale."""

    geo_mean: float
    median: float
    q25: float
    q75: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        """'0.98 (IQR 0.91–1.05)': the median and interquartile range."""
        if self.n == 0:
            return "–"
        g = lambda x: f"{x:.{digits}g}"  # noqa: E731
        return f"{g(self.median)} (IQR {g(self.q25)}–{g(self.q75)})"

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self.__dict__.items()}  # fmt: skip


def log_summary(values) -> LogSummary:
    """Geometric mean, median and quartiles of the positive finite values (others skipped)."""
    v = _finite(values)
    v = v[v > 0]
    if v.size == 0:
        return LogSummary(math.nan, math.nan, math.nan, math.nan, 0)
    logs = np.log(v)
    q25, med, q75 = np.exp(np.quantile(logs, [0.25, 0.5, 0.75]))
    return LogSummary(float(np.exp(logs.mean())), float(med), float(q25), float(q75), int(v.size))
