"""Per-model classes: the study's primary result (docs/method.md §5).

A cell holds a mixture of kinds of model (at max_len 64 and 30,000 steps, say, 27 of 32 models
with four heads that each separate the classes and 5 with one head that does not), so a mean
over models that straddles a cut-off describes none of them. Each model is classed from its
own heads first, and a cell reports the share of its models in each class, with a Wilson
interval (a share of n models; it keeps its coverage at 8 seeds):

    every   every head counts: each head's max(AUC, 1 - AUC) >= the AUC cut
    some    two or more heads count, not all
    one     one head carries the decision (exactly one counts)
    none    no head separates the classes alone

The rows come from minicount/study/rows.py (one dict per model with its heads' two-sided AUCs);
this module holds no numbers of its own beyond the cut-offs below, and imports only stats.

Also here: churn (how many models enter and leave a class between snapshots, per 10,000
steps) and the pre-registered rule for "is every-head-counts the limit?" (docs/findings.md).
"""

from __future__ import annotations

import math

from ..stats import Interval, proportion_ci

CLASSES = ("every", "some", "one", "none")
CLASS_NAMES = {
    "every": "every head counts",
    "some": "some heads count",
    "one": "one head carries the decision",
    "none": "no head counts alone",
}
AUC_CUT = 0.9  # a head counts when max(AUC, 1 - AUC) >= this (= rows.SEMANTIC_AUC)
SHARE_CUT = 0.5  # a class describes a cell when the lower bound of its share is above this
CHURN_STEPS = 10_000  # churn is counted per this many steps
# the pre-registered rule (docs/findings.md, "Is every head counting the limit?")
LIMIT_SHARE = 0.9  # "every" must hold in more than this share of models (lower bound)
LIMIT_LEAVE = 0.05  # and fewer than this share of models may leave it per CHURN_STEPS


def separates(auc_two_sided, cut: float = AUC_CUT) -> bool:
    """The one rule for "this head separates the classes" (a semantic head, one that
    counts): max(AUC, 1 - AUC) >= cut. None (no decomposition) and nan (one class absent)
    do not."""
    return auc_two_sided is not None and auc_two_sided >= cut


def model_class(auc_two_sided, cut: float = AUC_CUT) -> str:
    """The class of one model from its heads' max(AUC, 1 - AUC) (None: does not count)."""
    n = sum(separates(a, cut) for a in auc_two_sided)
    H = len(auc_two_sided)
    return "every" if n == H else "none" if n == 0 else "one" if n == 1 else "some"


def aucs_by_model(heads: list[dict]) -> dict[tuple, list]:
    """{(seed, step): [auc_two_sided of each head, by head index]} from head rows."""
    out: dict = {}
    for r in sorted(heads, key=lambda r: r["head"]):
        out.setdefault((r["seed"], r["step"]), []).append(r["auc_two_sided"])
    return out


def class_shares(aucs: list[list], cut: float = AUC_CUT) -> dict[str, Interval]:
    """The share of models in each class, with Wilson intervals; aucs: one list per model."""
    classes = [model_class(a, cut) for a in aucs]
    n = len(classes)
    return {c: proportion_ci(sum(k == c for k in classes), n) for c in CLASSES}


def class_verdict(shares: dict[str, Interval], share_cut: float = SHARE_CUT) -> dict:
    """Which class describes the cell: the one whose share's lower bound is above share_cut
    (at most one can be, for share_cut >= 0.5); 'in part' when the models outside 'every'
    are the majority but no single class is; else undecided. Ties at a bound: undecided."""
    for c in ("every", "one", "some", "none"):
        if shares[c].above(share_cut):
            return {"key": c, "label": CLASS_NAMES[c], "sure": True}
    n = shares["every"].n
    outside = n - round(shares["every"].value * n) if n else 0
    rest = proportion_ci(outside, n)
    if rest.above(share_cut) and not shares["one"].above(share_cut):
        return {"key": "in_part", "label": "some heads count in most models", "sure": True}
    top = max(CLASSES, key=lambda c: shares[c].value if n else -1)
    leaning = top if n and shares[top].value > share_cut else None
    return {"key": "undecided", "label": "undecided between classes", "sure": False,
            "leaning": leaning}  # fmt: skip


def churn(
    aucs_by_step: dict[int, dict[int, list]],
    start: int,
    end: int,
    cls: str = "every",
    cut: float = AUC_CUT,
) -> dict:
    """Models entering and leaving class ``cls`` between consecutive snapshots in [start,
    end]: aucs_by_step {step: {seed: [aucs]}}. Returns the counts, the models, the span of
    steps and the shares of models per CHURN_STEPS steps (None with fewer than 2 snapshots)."""
    steps = sorted(s for s in aucs_by_step if start <= s <= end)
    left = entered = 0
    for a, b in zip(steps, steps[1:], strict=False):
        for seed in aucs_by_step[a].keys() & aucs_by_step[b].keys():
            was = model_class(aucs_by_step[a][seed], cut) == cls
            now = model_class(aucs_by_step[b][seed], cut) == cls
            left += was and not now
            entered += now and not was
    n = len(aucs_by_step[steps[-1]]) if steps else 0
    span = steps[-1] - steps[0] if len(steps) > 1 else 0
    per = (lambda k: k / n * CHURN_STEPS / span) if n and span else (lambda k: None)  # noqa: E731
    return {"from": steps[0] if steps else None, "to": steps[-1] if steps else None,
            "snapshots": len(steps), "models": n, "left": left, "entered": entered,
            "left_per_10k": per(left), "entered_per_10k": per(entered)}  # fmt: skip


def newcombe_difference(a: Interval, b: Interval) -> tuple[float, float, float]:
    """(p_a - p_b, low, high): Newcombe's hybrid score interval for the difference of two
    independent shares, from their Wilson intervals."""
    d = a.value - b.value
    low = d - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return d, low, high


def limit_rule(aucs_by_step: dict[int, dict[int, list]], cut: float = AUC_CUT) -> dict:
    """The pre-registered rule of docs/findings.md for one long cell: 'equals is the limit',
    'a stationary mixture' or 'undecided', with each condition and whether it held."""
    steps = sorted(aucs_by_step)
    last = steps[-1]
    share = {s: class_shares(list(aucs_by_step[s].values()), cut)["every"] for s in steps}
    before = [s for s in steps if s <= last - CHURN_STEPS]
    ref = before[-1] if before else steps[0]
    half = churn(aucs_by_step, last // 2, last, "every", cut)
    leave = half["left_per_10k"]
    late = [s for s in steps if s >= last // 2]
    overlap = all(share[a].low <= share[b].high and share[b].low <= share[a].high
                  for a in late for b in late)  # fmt: skip
    limit = {
        f"share of 'every' at step {last}: lower bound > {LIMIT_SHARE}":
            bool(share[last].low > LIMIT_SHARE),
        f"share at step {last} not below the share at step {ref}":
            bool(share[last].value >= share[ref].value),
        f"models leaving 'every' over steps {half['from']}–{last}: < {LIMIT_LEAVE:.0%} per "
        f"{CHURN_STEPS:,} steps": leave is not None and leave < LIMIT_LEAVE,
    }  # fmt: skip
    mixture = {
        f"share of 'every' at step {last}: upper bound < {LIMIT_SHARE}":
            bool(share[last].high < LIMIT_SHARE),
        f"shares over steps {late[0]}–{last} all overlap": overlap,
        f"models leaving 'every' over steps {half['from']}–{last}: >= {LIMIT_LEAVE:.0%} per "
        f"{CHURN_STEPS:,} steps": leave is not None and leave >= LIMIT_LEAVE,
    }  # fmt: skip
    if all(limit.values()):
        outcome = "equals is the limit"
    elif all(mixture.values()):
        outcome = "a stationary mixture"
    else:
        outcome = "undecided"
    return {"outcome": outcome, "limit": limit, "mixture": mixture,
            "share_every": {s: share[s] for s in steps}, "churn_last_half": half}  # fmt: skip
