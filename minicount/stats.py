"""Statistics over seeds that fit their quantities.

    mean_ci          the mean over seeds with a 95% interval, one value per seed (accuracies,
                     differences, counts per model); method "t" (the default), "bca" or
                     "percentile", see below
    proportion_ci    a share of models (k of n have some property) with its Wilson score interval
    log_summary      geometric mean, median and interquartile range of positive ratios
                     (w_01, w_02), computed on the log scale where ratios are symmetric
    Interval         a number with its interval, how it was made, and how it stands against a
                     cut-off: above, below, or on it (a tie, undecided)

The methods of mean_ci:

    "t"           mean ± t_{n-1} · sd / √n, the Student t interval. Exact for normal values
                  at any n; the t quantile widens the interval for the uncertainty of sd itself,
                  which matters at eight seeds (t_7 = 2.36 against z = 1.96). Skewed values
                  cost it coverage on the long side (exponential draws: 0.90 at n = 8, 0.93 at
                  n = 32, tests/test_stats.py). The default: the study has 8 to 32 seeds, and
                  no bootstrap here covers better at those n.
    "bca"         the bias-corrected and accelerated bootstrap (Efron): bootstrap quantiles
                  shifted for the median bias of the resampled means and for skew (the
                  acceleration, from the jackknife). Second-order correct, so the one to use
                  for skewed quantities once there are many seeds; at 8 seeds it is a z-based
                  interval on a plug-in spread, about as narrow as "percentile" (0.90 on normal
                  values), and at 32 it has not yet overtaken "t" on exponential ones.
    "percentile"  the 2.5% and 97.5% quantiles of the bootstrap means (the method before "t").
                  Its width is about z · sd · √((n-1)/n) / √n, so at n = 8 it is ~0.78 of the
                  t interval and covers the mean ~89% of the time instead of 95%; kept, bit for
                  bit, to reproduce earlier reports.

Every method gives a zero-width interval for one value or equal values (no spread to go on)
and a nan interval for none. The t interval is not confined to the range of the data: for a
quantity bounded in [0, 1] it can step past a bound; a share of models is better put through
proportion_ci, whose Wilson interval stays inside [0, 1] and is not zero-width at 0 or n of n.

Ties: values on a grid (accuracies in 1/32) met by a percentile bootstrap make a bound land
exactly on a cut-off. Interval.above treats a bound at the cut (within TIE = 1e-12) as
undecided, and Interval.tie says so, so that a report can write "on the cut" instead of
deciding by the rounding of a quantile.

Pure: the bootstrap draws from a Generator seeded here, so one input gives one interval, and
the t and normal quantiles are computed here (the regularised incomplete beta function and
statistics.NormalDist), with no scipy at run time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

N_BOOT = 4000
LEVEL = 0.95
METHOD = "t"
METHODS = ("t", "bca", "percentile")
TIE = 1e-12  # a bound within TIE of a cut-off is on it

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (level) interval over n values; nan when there are none.

    method says how the interval was made ("t", "bca", "percentile", "wilson"; "" for one
    built by hand)."""

    value: float
    low: float
    high: float
    n: int
    method: str = ""

    def tie(self, cut: float) -> bool:
        """True when a bound equals ``cut`` (within TIE = 1e-12): the interval ends on the cut,
        and a report should say "on the cut" rather than above or below."""
        if self.n == 0 or math.isnan(self.value):
            return False
        return abs(self.low - cut) <= TIE or abs(self.high - cut) <= TIE

    def above(self, cut: float) -> bool | None:
        """True only when the whole interval is strictly above ``cut`` (low > cut), False only
        when it is strictly below (high < cut), None otherwise: when it straddles the cut, and
        when a bound lies on the cut (a tie, see ``tie``: undecided, not decided by the rounding
        of a bound). None too with no values."""
        if self.n == 0 or math.isnan(self.value) or self.tie(cut):
            return None
        if self.low > cut:
            return True
        if self.high < cut:
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
                "n": self.n, "method": self.method}  # fmt: skip


# ----------------------------------------------------------------------------- quantiles


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction
    (modified Lentz), on the side of x where the fraction converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))  # fmt: skip
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 100_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < eps:
            return math.exp(log_front) * f / a
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@functools.lru_cache(maxsize=256)
def t_ppf(p: float, df: float) -> float:
    """The p quantile of Student's t with df > 0 degrees of freedom (the inverse of its
    distribution function), by bisection on t_sf to a relative 1e-15."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_ppf needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p == 0.5:
        return 0.0
    q = 1.0 - p  # the upper tail wanted
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > q:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-15 * hi:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_sf(mid, df) > q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- intervals


def _finite(values) -> np.ndarray:
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def bootstrap_means(v: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of v [n]: [n_boot]."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))  # [n_boot, n]
    return v[idx].mean(axis=1)  # [n_boot]


def _bca_levels(v: np.ndarray, boots: np.ndarray, mean: float, level: float) -> list[float]:
    """The two quantile levels of the BCa interval: the percentile levels moved by the bias
    correction z0 (the mid-rank of the mean among the bootstrap means, so that means equal to
    it, common with values on a grid, count half; equal within 1e-12 of the largest value, as
    a resample that permutes the data can round its mean differently) and the jackknife
    acceleration a. v is not constant (mean_ci has dealt with that)."""
    tol = TIE * float(np.max(np.abs(v)))  # rounding of a mean, relative to the values' size
    below = np.count_nonzero(boots < mean - tol) + 0.5 * np.count_nonzero(
        np.abs(boots - mean) <= tol
    )
    B = boots.size
    z0 = _NORMAL.inv_cdf(min(max(below / B, 0.5 / B), 1 - 0.5 / B))
    # jackknife means: theta_(i) = (n mean - x_i) / (n - 1), so theta_(.) - theta_(i) is
    # (x_i - mean) / (n - 1); the scale cancels in a, so it is set to 1 (no underflow)
    d = v - mean
    d = d / np.max(np.abs(d))
    a = float(np.sum(d**3) / (6 * np.sum(d**2) ** 1.5))
    tail = (1 - level) / 2
    out = []
    for alpha in (tail, 1 - tail):
        w = z0 + _NORMAL.inv_cdf(alpha)
        denom = 1 - a * w
        out.append(_NORMAL.cdf(z0 + w / denom) if denom > 0 else float(alpha > 0.5))
    return out


def mean_ci(values, *, level: float = LEVEL, method: str = METHOD, n_boot: int = N_BOOT,
            seed: int = 0) -> Interval:  # fmt: skip
    """The mean of the finite values (None and nan skipped) with a level interval by method:
    "t" (Student t, the default), "bca" (bias-corrected and accelerated bootstrap) or
    "percentile" (percentile bootstrap); n_boot and seed serve the bootstrap methods. A single
    value, or equal values, give a zero-width interval; no values give nan."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    v = _finite(values)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, method)
    mean = float(v.mean())
    if v.size == 1 or np.all(v == v[0]):
        return Interval(mean, mean, mean, int(v.size), method)
    if method == "t":
        half = t_ppf(1 - (1 - level) / 2, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
        return Interval(mean, mean - half, mean + half, int(v.size), method)
    boots = bootstrap_means(v, n_boot=n_boot, seed=seed)
    if method == "percentile":
        tail = (1 - level) / 2
        low, high = np.quantile(boots, [tail, 1 - tail])
    else:
        low, high = np.quantile(boots, _bca_levels(v, boots, mean, level))
    return Interval(mean, float(low), float(high), int(v.size), method)


def proportion_ci(successes: int, n: int, *, level: float = LEVEL) -> Interval:
    """A share of n models, successes of which have some property: the value successes / n
    with its Wilson score interval (the interval of the shares p whose score test at level
    does not reject), which stays in [0, 1] and has width at 0 or n successes. n == 0 gives
    a nan interval."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "wilson")
    p = successes / n
    z = _NORMAL.inv_cdf(1 - (1 - level) / 2)
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, low, high, int(n), "wilson")


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
