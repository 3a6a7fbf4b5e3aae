"""From analyses to numbers: table rows per model and per head, statistics over seeds, the
verdict rules and the claims of the paper. Everything the report prints is computed here;
minicount/study/report.py only formats it.

Import direction: sweep -> summary -> results; report -> results (report formats, summary
writes the files).

Definitions used throughout (docs/method.md says more):
    semantic head   its EOS contribution alone separates the classes in either direction:
                    max(AUC, 1 - AUC) >= SEMANTIC_AUC; auc_sign says which direction
    counting head   semantic, and its attention weighs 1s like 0s (w_01 in BALANCED_W01) and
                    suppresses 2s (w_02 < SUPPRESSED_W02)
    gap             l-acc of the fitted per-head weighting minus that of the best uniform
                    weighting (one shared scale and bias chosen for accuracy)
    n_eff           participation ratio of the fitted weights, (sum |a|)^2 / sum a^2

It reads a run folder's snapshot files; summary.summarise writes what it computes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..analysis.semantics import two_sided
from ..stats import Interval, log_summary, mean_ci, proportion_ci
from . import classes
from .classes import AUC_CUT, CLASSES, SHARE_CUT, aucs_by_model, class_shares, model_class

SEMANTIC_AUC = AUC_CUT  # a head separates the classes when max(AUC, 1 - AUC) >= this
BALANCED_W01 = (0.8, 1.25)  # w_01 in this range: 1s and 0s weighed alike
SUPPRESSED_W02 = 0.2  # w_02 below this: 2s suppressed
GAP = 0.01  # l-acc difference treated as real
MOST_HEADS = 0.75  # a share of semantic heads above this: most heads carry the count
DOMINANT_N_EFF = 1.5  # fitted weights with n_eff below this: one head carries the decision
MARGIN_RATIO = 1.1  # a fitted margin this many times the equal-weight one: the weights matter
REFERENCE = "calibrated"  # the reference for "uniform" the verdict uses (docs/method.md §4)
# the neighbouring cut-offs of the sensitivity table
SENSITIVITY = {"auc": (0.8, 0.85, 0.95, 0.99), "share": (0.6, 0.75, 0.9),
               "gap": (0.005, 0.02, 0.03)}  # fmt: skip

# ----------------------------------------------------------------------------- rows


def _get(d, *path):
    """d[path[0]][path[1]]...; None as soon as a level is missing or None."""
    for p in path:
        if d is None:
            return None
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def _intervention(a: dict, name: str, heads=None):
    for r in a.get("interventions") or []:
        if r["name"] == name and (heads is None or r["heads"] == heads):
            return r["delta"]["l_acc"]
    return None


def _ablation(a: dict, mode: str, kind: str, kept) -> float | None:
    for r in _get(a, "ablation", mode) or []:
        if r["kind"] == kind and r["kept"] == kept:
            return r["l_acc"]
    return None


def is_counting(auc2, w01, w02) -> bool:
    return (
        auc2 is not None and auc2 >= SEMANTIC_AUC and w01 is not None and w02 is not None
        and BALANCED_W01[0] <= w01 <= BALANCED_W01[1] and w02 < SUPPRESSED_W02
    )  # fmt: skip


def fitted_weights(agg: dict, H: int) -> tuple[list, list]:
    """(shares |a_h| / sum |a|, signs) of the fitted weights on the standardised contributions."""
    raw = agg.get("alpha_fitted_raw")
    if raw is None:
        return [None] * H, [None] * H
    a = np.abs(np.asarray(raw, dtype=np.float64))
    total = a.sum()
    shares = (a / total).tolist() if total > 0 else [None] * H
    return shares, [1 if x >= 0 else -1 for x in raw]


def head_rows(knobs: dict, seed: int, step: int, a: dict) -> list[dict]:
    """One row per head of one model at one snapshot."""
    H = knobs["n_heads"]
    agg = a.get("aggregation") or {}
    shares, signs = fitted_weights(agg, H)
    order = sorted(range(H), key=lambda h: -(shares[h] or 0.0))
    sigma = np.asarray(agg.get("sigma") or [np.nan] * H, dtype=np.float64)
    rows = []
    for h in range(H):
        sem = a["semantics"][h]
        auc2, sign = two_sided(sem["auc_alone"])
        w01, w02 = a["attention"]["w_01"][h], a["attention"]["w_02"][h]
        rows.append({
            **knobs, "seed": seed, "step": step, "head": h, "rank": order.index(h) + 1,
            "auc": sem["auc_alone"], "auc_two_sided": auc2, "auc_sign": sign,
            "semantic": auc2 is not None and auc2 >= SEMANTIC_AUC,
            "counting": is_counting(auc2, w01, w02),
            "solo_l_acc": sem["solo"]["l_acc"], "scaled_l_acc": sem["scaled"]["l_acc"],
            "fitted_share": shares[h], "fitted_sign": signs[h],
            "trained_share": float(sigma[h] / sigma.sum()) if np.isfinite(sigma).all() else None,
            "sigma": _at(agg.get("sigma"), h), "solo_slope": _at(agg.get("solo_slope"), h),
            **{f"c_{k}": _at(_get(a, "contributions", k), h)
               for k in ("mean_pos", "mean_neg", "sd_pos", "sd_neg")},
            "w_01": w01, "w_02": w02, "bos_weight": a["attention"]["bos_weight"][h],
            "only_mean_l_acc": _ablation(a, "mean", "only", [h]),
            "leave_out_zero_l_acc": (_ablation(a, "zero", "leave_out",
                                               [g for g in range(H) if g != h]) if H > 1 else None),
            "force_w01_delta_l_acc": _intervention(a, "force_w01=1", [h]),
            "force_w02_delta_l_acc": _intervention(a, "force_w02=0", [h]),
        })  # fmt: skip
    return rows


def _at(values, h):
    """values[h], or None when values is missing."""
    return None if values is None else values[h]


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def measure_columns(agg: dict) -> dict:
    """The ceiling-free aggregation measures and the three references for "uniform"
    (docs/method.md §4): log-losses, margins, the calibrated-members weighting, n_eff in
    each unit. log-loss ratios are uniform / fitted (> 1: the fitted weights fit better)."""
    ll, margin = agg.get("logloss") or {}, agg.get("margin") or {}
    fitted = _get(agg, "fitted", "l_acc")
    cal_best = _get(agg, "calibrated_best", "l_acc")
    return {
        **{f"logloss_{k}": ll.get(k) for k in ("trained", "fitted", "uniform_logloss",
                                                "calibrated")},
        "logloss_ratio": _ratio(ll.get("uniform_logloss"), ll.get("fitted")),
        "logloss_ratio_calibrated": _ratio(ll.get("calibrated"), ll.get("fitted")),
        "logloss_removed": agg.get("logloss_removed"),
        "logloss_removed_calibrated": agg.get("logloss_removed_calibrated"),
        "error_removed": agg.get("error_removed"),
        "error_removed_calibrated": agg.get("error_removed_calibrated"),
        **{f"margin_{k}": margin.get(k) for k in ("trained", "fitted", "uniform_logloss",
                                                   "calibrated")},
        "margin_gain": (None if margin.get("fitted") is None or margin.get("uniform_logloss")
                        is None else margin["fitted"] - margin["uniform_logloss"]),
        "margin_gain_calibrated": (None if margin.get("fitted") is None or
                                   margin.get("calibrated") is None
                                   else margin["fitted"] - margin["calibrated"]),
        "calibrated_l_acc": cal_best,
        "gap_calibrated": None if fitted is None or cal_best is None else fitted - cal_best,
        "n_eff_fitted_raw": agg.get("n_eff_fitted_raw"),
        "n_eff_fitted_calibrated": agg.get("n_eff_fitted_calibrated"),
        "n_eff_trained_calibrated": agg.get("n_eff_trained_calibrated"),
    }  # fmt: skip


def _min_heads_for(a: dict, target: float):
    """Fewest kept heads whose zero-ablated model reaches l-acc >= target (None if none)."""
    sizes = [len(r["kept"]) for r in _get(a, "ablation", "zero") or []
             if r["kind"] == "subset" and r["l_acc"] >= target]  # fmt: skip
    return min(sizes) if sizes else None


def l2_key(l2: float) -> str:
    return f"{l2:.0e}".replace("e-0", "e-")


def l2_columns(agg: dict, uniform_l_acc) -> dict:
    """gap and n_eff of the fitted weights refitted at each L2 strength of the check."""
    out = {}
    for entry in agg.get("l2_check") or []:
        k = l2_key(entry["l2"])
        fitted = _get(entry, "fitted", "l_acc")
        out[f"gap_l2_{k}"] = (
            None if fitted is None or uniform_l_acc is None else (fitted - uniform_l_acc)
        )
        out[f"n_eff_fitted_l2_{k}"] = entry.get("n_eff_fitted")
        out[f"fitted_l_acc_l2_{k}"] = fitted
    return out


def model_row(knobs: dict, seed: int, step: int, a: dict, heads: list[dict]) -> dict:
    """One row per model at one snapshot."""
    agg = a.get("aggregation") or {}
    top = min(heads, key=lambda r: r["rank"])
    uniform_best = agg.get("uniform") or {}
    uniform_logloss = agg.get("uniform_logloss") or {}
    return {
        **knobs, "seed": seed, "step": step,
        "l_acc": a["metrics"]["l_acc"], "s_acc": a["metrics"]["s_acc"],
        "roc_auc": a["metrics"]["roc_auc"], "loss": a["metrics"]["loss"],
        "fitted_l_acc": _get(agg, "fitted", "l_acc"), "fitted_s_acc": _get(agg, "fitted", "s_acc"),
        "uniform_l_acc": uniform_best.get("l_acc"),
        "uniform_logloss_l_acc": uniform_logloss.get("l_acc"),
        "gap": (None if _get(agg, "fitted", "l_acc") is None or uniform_best.get("l_acc") is None
                else agg["fitted"]["l_acc"] - uniform_best["l_acc"]),
        "n_eff_fitted": agg.get("n_eff_fitted"), "n_eff_trained": agg.get("n_eff_trained"),
        "top_share": top["fitted_share"],
        "semantic_heads": sum(r["semantic"] for r in heads),
        "model_class": model_class([r["auc_two_sided"] for r in heads]),
        "weakest_auc": min((r["auc_two_sided"] for r in heads if r["auc_two_sided"] is not None),
                           default=None),  # fmt: skip
        "reversed_semantic_heads": sum(r["semantic"] and r["auc_sign"] == -1 for r in heads),
        "counting_heads": sum(r["counting"] for r in heads),
        "best_solo_l_acc": max(r["solo_l_acc"] for r in heads),
        "best_scaled_l_acc": max(r["scaled_l_acc"] for r in heads),
        "min_heads_99": _min_heads_for(a, 0.99 * a["metrics"]["l_acc"]),
        "ideal_delta_l_acc": _intervention(a, "all_heads_ideal"),
        "top_force_w01_delta_l_acc": top["force_w01_delta_l_acc"],
        "values_mean_delta_l_acc": _intervention(a, "mean_values"),
        "values_roll_delta_l_acc": _intervention(a, "roll_values"),
        "linear_label_l_acc": _get(a, "linear", "labels", "l_acc"),
        "linear_decision_agreement": _get(a, "linear", "decision_agreement"),
        "long_l_acc": None,
        **measure_columns(agg),
        **l2_columns(agg, uniform_best.get("l_acc")),
    }  # fmt: skip


def snapshot_rows(cell, name: str, seeds, step: int, members: list[dict]):
    """(model rows, head rows) of one cell's ensemble at one snapshot."""
    knobs = {"name": name, **asdict(cell)}
    models, heads = [], []
    for seed, a in zip(seeds, members, strict=True):
        rows = head_rows(knobs, int(seed), step, a)
        models.append(model_row(knobs, int(seed), step, a, rows))
        heads.extend(rows)
    return models, heads


# ----------------------------------------------------------------------------- statistics


def _values(rows, key):
    return [r[key] for r in rows if r.get(key) is not None]


def _share_of_heads(values) -> Interval:
    """The mean over models of a per-model share of heads, t interval clipped to [0, 1]."""
    i = mean_ci(values)
    return replace(i, low=max(0.0, i.low), high=min(1.0, i.high)) if i.n else i


def _share_of_models(flags) -> Interval:
    """The share of models with a property, with its Wilson interval."""
    flags = list(flags)
    return proportion_ci(sum(bool(f) for f in flags), len(flags))


def cell_statistics(models: list[dict], heads: list[dict]) -> dict:
    """The statistics of one cell at one snapshot, over its seeds (not over heads)."""
    H = models[0]["n_heads"]
    frac = lambda k: [r[k] / H for r in models]  # noqa: E731
    top = [r for r in heads if r["rank"] == 1]
    out = {
        "n_seeds": len(models),
        "n_heads": H,
        **{k: mean_ci(_values(models, k)) for k in (
            "l_acc", "s_acc", "roc_auc", "fitted_l_acc", "uniform_l_acc", "uniform_logloss_l_acc",
            "gap", "n_eff_fitted", "n_eff_trained", "top_share", "semantic_heads",
            "counting_heads", "best_scaled_l_acc", "ideal_delta_l_acc", "values_mean_delta_l_acc",
            "values_roll_delta_l_acc", "linear_label_l_acc", "long_l_acc")},
        "semantic_fraction": _share_of_heads(frac("semantic_heads")),
        "counting_fraction": _share_of_heads(frac("counting_heads")),
        "reversed_fraction": _share_of_heads(frac("reversed_semantic_heads")),
        "fitted_vs_trained": mean_ci([abs(r["fitted_l_acc"] - r["l_acc"]) for r in models
                                      if r["fitted_l_acc"] is not None]),
        "scaled_below_model": _share_of_models([r["best_scaled_l_acc"] < r["l_acc"] - GAP
                                                for r in models]),
        "top_w_01": log_summary(_values(top, "w_01")),
        "top_w_02": log_summary(_values(top, "w_02")),
        "w_01": log_summary(_values(heads, "w_01")),
        "w_02": log_summary(_values(heads, "w_02")),
        "top_counting": _share_of_models([r["counting"] for r in top]),
    }  # fmt: skip
    for k in models[0]:
        if k.startswith(("gap_l2_", "n_eff_fitted_l2_", "fitted_l_acc_l2_")):
            out[k] = mean_ci(_values(models, k))
    out.update(class_statistics(models, heads))
    return out


AGGREGATION_MEANS = ("gap_calibrated", "calibrated_l_acc",
                     "margin_fitted", "margin_uniform_logloss", "margin_calibrated",
                     "margin_trained", "n_eff_fitted_raw", "n_eff_fitted_calibrated",
                     "n_eff_trained_calibrated", "error_removed", "error_removed_calibrated",
                     "logloss_trained", "logloss_fitted", "logloss_uniform_logloss",
                     "logloss_calibrated")  # fmt: skip


def class_statistics(models: list[dict], heads: list[dict], cut: float = SEMANTIC_AUC) -> dict:
    """The per-model classes of one cell at one snapshot (docs/method.md §5) and the
    aggregation measures over all models and over the models where every head counts."""
    aucs = aucs_by_model(heads)
    shares = class_shares(list(aucs.values()), cut)
    every = [r for r in models if model_class(aucs[(r["seed"], r["step"])], cut) == "every"]
    out = {f"class_{c}": shares[c] for c in CLASSES}
    out["class_every_models"] = len(every)
    for k in AGGREGATION_MEANS:
        out[k] = mean_ci(_values(models, k))
    for k in AGGREGATION_MEANS + ("gap", "n_eff_fitted", "n_eff_trained"):
        out[f"{k}_every"] = mean_ci(_values(every, k))
    for k in ("logloss_ratio", "logloss_ratio_calibrated"):  # ratios: on the log scale
        out[k] = log_summary(_values(models, k))
    for k, ref in (("margin_ratio", "margin_uniform_logloss"),
                   ("margin_ratio_calibrated", "margin_calibrated")):  # fmt: skip
        out[k] = ratio_ci(models, "margin_fitted", ref)
        out[f"{k}_every"] = ratio_ci(every, "margin_fitted", ref)
    return out


def ratio_ci(rows: list[dict], num: str, den: str) -> Interval:
    """The geometric mean over models of num / den with a t interval on the log scale (a
    ratio is symmetric there), over the models where both are positive."""
    logs = [math.log(r[num] / r[den]) for r in rows
            if (r.get(num) or 0) > 0 and (r.get(den) or 0) > 0]  # fmt: skip
    i = mean_ci(logs)
    if not i.n:
        return i
    return Interval(math.exp(i.value), math.exp(i.low), math.exp(i.high), i.n, "t on log")


def aggregation_verdict(
    stats: dict, *, gap: float = GAP, reference: str = REFERENCE, subset: str = ""
) -> dict:
    """Do equal weights suffice? Under ``reference`` ('calibrated': equal weights on heads
    scaled by their own solo slopes; 'sigma': on σ-standardised heads), over all models or
    (subset='_every') over the models where every head counts. Two rules, each on the mean
    over seeds and its 95% t interval: E accuracy (fitted − equal-weight l-acc > gap), M
    margin (fitted / equal-weight 5% margin > MARGIN_RATIO, geometric mean, t interval on the
    log scale), which keeps measuring when every weighting is right. 'unequal' if either
    holds, 'equal' if both fail, else undecided."""
    suffix = "_calibrated" if reference == "calibrated" else ""
    E = _rule(f"gap fitted − equal ({reference}) l-acc > {gap}",
              stats[f"gap{suffix}{subset}"], gap, True)  # fmt: skip
    M = _rule(f"margin fitted / equal ({reference}) > {MARGIN_RATIO}",
              stats[f"margin_ratio{suffix}{subset}"], MARGIN_RATIO, True)  # fmt: skip
    if E["holds"] or M["holds"]:
        key = "unequal"
    elif E["holds"] is False and M["holds"] is False:
        key = "equal"
    else:
        key = "undecided"
    text = {"unequal": "weighted unequally", "equal": "equal weights suffice",
            "undecided": "weighting undecided"}[key]  # fmt: skip
    return {"key": key, "label": text, "rules": [E, M]}


def verdict(stats: dict, *, share_cut: float = SHARE_CUT, gap: float = GAP) -> dict:
    """Compete or cooperate, for one cell, from its per-model classes (the primary result):
    the class that holds in most models (Wilson interval of its share above share_cut), then
    whether equal weights of calibrated heads suffice, over the models of that class when it
    is 'every', else over all models. Returns the label, its parts, the rules and a sentence."""
    if stats["n_heads"] == 1:
        return {"label": "n/a (one head)", "rules": [], "sure": True, "key": "n/a",
                "sentence": "one head: nothing to compete or cooperate with."}  # fmt: skip
    shares = {c: stats[f"class_{c}"] for c in CLASSES}
    cls = classes.class_verdict(shares, share_cut)
    subset = "_every" if cls["key"] == "every" and stats["class_every_models"] > 1 else ""
    agg = aggregation_verdict(stats, gap=gap, subset=subset)
    if cls["key"] == "one":
        label, key = "compete: one head carries the decision", "one"
    elif cls["key"] == "undecided":
        label, key = "undecided", "undecided"
    else:
        who = {"every": "every head counts", "in_part": "cooperate in part: some heads count",
               "some": "cooperate in part: some heads count",
               "none": "no head counts alone"}[cls["key"]]  # fmt: skip
        label, key = f"{who}, {agg['label']}", f"{cls['key']}/{agg['key']}"
    rules = [_share_rule(c, shares[c], share_cut) for c in CLASSES] + agg["rules"]
    sentence = (
        "models in each class: "
        + ", ".join(f"{c} {shares[c].fmt(pct=True)}" for c in CLASSES)
        + f"; over {'the models where every head counts' if subset else 'all models'}, "
        + "; ".join(f"{r['rule']}: {r['shown']}" for r in agg["rules"])
    )
    if cls.get("leaning"):
        share = shares[cls["leaning"]]
        sentence += (
            f"; the same direction as '{classes.CLASS_NAMES[cls['leaning']]}' "
            f"({share.fmt(pct=True)} of models), not decided at {share.n} seeds"
        )
    sure = cls["sure"] and (cls["key"] == "one" or agg["key"] != "undecided")
    return {"label": label, "key": key, "class": cls["key"], "aggregation": agg["key"],
            "rules": rules, "sure": sure, "sentence": sentence + "."}  # fmt: skip


def _share_rule(c: str, share: Interval, cut: float) -> dict:
    out = _rule(f"share of models '{c}' > {cut}", share, cut, True)
    out["shown"] = share.fmt(pct=True) + (" (on the cut)" if share.tie(cut) else "")
    return out


def sensitivity(base: dict, models: list[dict], heads: list[dict]) -> dict:
    """Each label of ``verdict`` under the neighbouring cut-offs (SENSITIVITY), one changed at
    a time, from a cell's statistics ``base`` and its rows: {"labels": {"default": label,
    "AUC 0.8": label, ...}, "robust": whether every label is the same}."""
    out = {"default": verdict(base)["label"]}
    for auc in SENSITIVITY["auc"]:
        stats = {**base, **class_statistics(models, heads, cut=auc)}
        out[f"AUC {auc}"] = verdict(stats)["label"]
    for share in SENSITIVITY["share"]:
        out[f"share {share}"] = verdict(base, share_cut=share)["label"]
    for gap in SENSITIVITY["gap"]:
        out[f"gap {100 * gap:g} pt"] = verdict(base, gap=gap)["label"]
    return {"labels": out, **stability(list(out.values()))}


def stability(labels: list[str]) -> dict:
    """How a label (labels[0]) stands against its neighbours (labels[1:]): 'robust' when all
    agree; 'firm' when the others agree or are undecided (a stricter cut-off may leave it
    open, none contradicts it); 'flips' when a neighbour gives another decided label."""
    others = {x for x in labels[1:] if x != labels[0]}
    decided = {x for x in others if not x.startswith("undecided")}
    state = "robust" if not others else "flips" if decided else "firm"
    return {"robust": state == "robust", "stability": state}


def mean_verdict(stats: dict) -> dict:
    """The earlier verdict from means over seeds (kept beside the per-model classes for
    comparison; docs/method.md says why it is no longer the primary one)."""
    return _mean_verdict(stats)


def l2_verdicts(stats: dict) -> dict:
    """The verdict of each cell with the fitted weights refitted at every L2 strength of the
    check: {l2 label: {cell: {"label", "fitted_l_acc", "fit_ok"}}}. fit_ok is False where the
    penalty costs the fitted weighting more than 2 GAP of l-acc against the trained model:
    there the gap measures the penalty, not the heads."""
    labels = sorted({k[len("gap_l2_"):] for s in stats.values() for k in s if
                     k.startswith("gap_l2_")}, key=float)  # fmt: skip
    out = {}
    for l2 in labels:
        out[l2] = {}
        for name, s in stats.items():
            if f"gap_l2_{l2}" not in s or f"fitted_l_acc_l2_{l2}" not in s:
                continue
            at = {**s, "gap": s[f"gap_l2_{l2}"], "n_eff_fitted": s[f"n_eff_fitted_l2_{l2}"]}
            fitted = s[f"fitted_l_acc_l2_{l2}"].value
            out[l2][name] = {"label": mean_verdict(at)["label"], "fitted_l_acc": fitted,
                             "fit_ok": bool(s["l_acc"].value - fitted <= 2 * GAP)}  # fmt: skip
    return out


def _rule(text: str, stat: Interval, cut: float, above: bool) -> dict:
    """One verdict rule: does the interval lie above (or below) the cut-off?"""
    side = stat.above(cut)
    holds = None if side is None else (side if above else not side)
    return {"rule": text, "value": stat.to_dict(), "cut": cut, "holds": holds,
            "shown": stat.fmt()}  # fmt: skip


LABELS = {
    "one": "compete: one head carries the decision",
    "ensemble": "cooperate: a pseudo-ensemble with equal weights",
    "weighted": "cooperate: every head counts, weighted unequally",
    "subset": "cooperate in part: some heads count, weighted unequally",
    "subset_equal": "some heads count, equal weights suffice",
    "undecided": "undecided",
}


def _mean_verdict(stats: dict) -> dict:
    """Compete or cooperate, for one cell: a label, the rules that produced it (each with its
    interval and whether the interval clears its cut-off) and a sentence a reader can quote.

    Three rules over the seeds (95% t intervals); a rule holds when the whole interval
    lies beyond its cut-off, fails when the whole interval lies on the other side, and is
    open when the interval straddles the cut-off:
        A  most heads carry the count:     mean share of semantic heads      > 0.75
        C  equal weights lose accuracy:    mean gap (fitted - best uniform)  > GAP
        D  one head carries the decision:  mean n_eff of the fitted weights  < DOMINANT_N_EFF
    Labels: D holds -> one head; D fails and A holds -> every head counts, weighted unequally
    (C holds; the paper's picture) or a pseudo-ensemble with equal weights (C fails); D fails
    and A fails -> some heads count, weighted unequally (C holds) or equal weights suffice
    (C fails); a rule the label needs that is open -> undecided, naming it.
    """
    if stats["n_heads"] == 1:
        return {"label": "n/a (one head)", "rules": [], "sure": True,
                "sentence": "one head: nothing to compete or cooperate with."}  # fmt: skip
    A = _rule(f"share of semantic heads > {MOST_HEADS}", stats["semantic_fraction"], MOST_HEADS,
              True)  # fmt: skip
    C = _rule(f"gap fitted − best uniform l-acc > {GAP}", stats["gap"], GAP, True)
    D = _rule(f"n_eff of fitted weights < {DOMINANT_N_EFF}", stats["n_eff_fitted"],
              DOMINANT_N_EFF, False)  # fmt: skip
    rules = [A, C, D]
    if D["holds"]:
        key, needed = "one", [D]
    elif D["holds"] is False and A["holds"] is not None and C["holds"] is not None:
        key = {
            (True, True): "weighted",
            (True, False): "ensemble",
            (False, True): "subset",
            (False, False): "subset_equal",
        }[A["holds"], C["holds"]]
        needed = rules
    else:
        key, needed = "undecided", rules
    open_rules = [r["rule"] for r in needed if r["holds"] is None]
    s = stats
    sentence = (
        f"{s['semantic_fraction'].fmt(pct=True)} of heads carry the count alone; equal weights "
        f"lose {100 * s['gap'].value:.1f} points of l-acc "
        f"[{100 * s['gap'].low:.1f}, {100 * s['gap'].high:.1f}] against fitted ones; the fitted "
        f"weights spread over n_eff {s['n_eff_fitted'].fmt(2)} of {s['n_heads']} heads"
    )
    if open_rules:
        sentence += "; not decided by these seeds: " + "; ".join(open_rules)
    return {"label": LABELS[key], "key": key, "rules": rules, "sure": key != "undecided",
            "sentence": sentence + "."}  # fmt: skip


def claims(stats_by_cell: dict) -> list[dict]:
    """The paper's claims (docs/method.md §4), each with a status over the cells with several heads:
    'supported' or 'not supported' (every cell's interval on one side of the rule's cut-off),
    'undecided' (every interval straddles it), counts of each when cells differ, or 'by
    construction'; every entry names its rule and per-cell evidence."""
    multi = {n: s for n, s in stats_by_cell.items() if s["n_heads"] > 1}
    if not multi:
        return []

    def status(decisions):
        counts = {"supported": sum(d is True for d in decisions),
                  "not supported": sum(d is False for d in decisions),
                  "undecided": sum(d is None for d in decisions)}  # fmt: skip
        for word, k in counts.items():
            if k == len(decisions):
                return word
        return "mixed: " + ", ".join(f"{k} {word}" for word, k in counts.items() if k)

    def entry(claim, rule, key, cut, above, fmt_kw=None):
        decisions, evidence = [], []
        for n, s in multi.items():
            side = s[key].above(cut)
            decisions.append(None if side is None else (side if above else not side))
            evidence.append(f"{n}: {s[key].fmt(**(fmt_kw or {}))}")
        return {"claim": claim, "rule": rule, "status": status(decisions),
                "evidence": "; ".join(evidence)}  # fmt: skip

    out = [
        entry("Every head alone separates the classes (a pseudo-ensemble on semantics).",
              "share of models whose every head has max(AUC, 1 − AUC) ≥ "
              f"{SEMANTIC_AUC} > {SHARE_CUT}", "class_every", SHARE_CUT, True,
              {"pct": True}),
        entry("Aggregation is non-uniform against calibrated members: equal weights on heads "
              "scaled by their own solo slopes lose margin.", "geometric-mean margin ratio "
              f"(fitted / equal calibrated) > {MARGIN_RATIO}", "margin_ratio_calibrated",
              MARGIN_RATIO, True),
        entry("Aggregation is non-uniform (σ-standardised reference): the best uniform "
              "weighting is less accurate than fitted weights.",
              f"mean gap (fitted − best uniform l-acc) > {GAP}",
              "gap", GAP, True),
        entry("Fitted weights recover the trained model (fitted ≈ trained).",
              f"mean |fitted − trained l-acc| < {2 * GAP}", "fitted_vs_trained", 2 * GAP, False),
        entry("No single head scaled by n_heads reproduces the model's decisions (not a pure "
              "ensemble in syntax).", f"share of models where the best scaled head is > {GAP} "
              "l-acc below the model > 0.5", "scaled_below_model", 0.5, True, {"pct": True}),
        entry("The top-weighted head counts: w_01 ≈ 1 and w_02 ≪ 1.",
              f"share of models whose top head is a counting head (w_01 in {list(BALANCED_W01)}, "
              f"w_02 < {SUPPRESSED_W02}) > 0.5", "top_counting", 0.5, True, {"pct": True}),
        entry("Pushing every head's attention to the ideal pattern (w_01 = 1, w_02 = 0) does not "
              "hurt accuracy.", f"mean Δ l-acc > −{GAP}", "ideal_delta_l_acc", -GAP, True),
        entry("Value vectors matter little: averaging them over heads costs little accuracy.",
              f"mean Δ l-acc with averaged values > −{5 * GAP}", "values_mean_delta_l_acc",
              -5 * GAP, True),
    ]  # fmt: skip
    out.append({
        "claim": "Performance follows a linear combination of the head outputs.",
        "rule": "in a one-layer attention-only model the EOS logit is exactly the direct path "
                "plus the sum of the heads' contributions",
        "status": "by construction",
        "evidence": "; ".join(f"{n}: read-out l-acc {s['linear_label_l_acc'].fmt()}"
                              for n, s in multi.items()),
    })  # fmt: skip
    return out


def short_answer(verdicts: dict, stats_by_cell: dict) -> list[str]:
    """A few plain sentences: a tally over the cells with several heads, then one per cell."""
    multi = [n for n in verdicts if stats_by_cell[n]["n_heads"] > 1]
    if not multi:
        return []
    tally: dict = {}
    for n in multi:
        tally.setdefault(verdicts[n]["label"], []).append(n)
    out = [
        "Over the "
        + f"{len(multi)} cell(s) with several heads: "
        + "; ".join(
            f"{label} in {len(names)} ({', '.join(names)})" for label, names in tally.items()
        )
        + "."
    ]
    for name, v in verdicts.items():
        if stats_by_cell[name]["n_heads"] == 1:
            continue
        how = "clear" if v["sure"] else "not decided by these seeds"
        out.append(f"{name}: {v['label']} ({how}) — {v['sentence']}")
    return out


# ----------------------------------------------------------------------------- trajectories


def trajectories(models: list[dict], heads: list[dict]) -> dict:
    """Per cell name, per snapshot step: the seed-wise values of the role statistics (for the
    figures of head roles through training)."""
    out: dict = {}
    for r in models:
        t = out.setdefault(r["name"], {}).setdefault(r["step"], {
            "semantic_heads": [], "counting_heads": [], "n_eff_fitted": [], "gap": [],
            "l_acc": [], "w_01_by_rank": {}, "w_02_by_rank": {}})  # fmt: skip
        for k in ("semantic_heads", "counting_heads", "n_eff_fitted", "gap", "l_acc"):
            t[k].append(r[k])
    for r in heads:
        t = out[r["name"]][r["step"]]
        for k in ("w_01", "w_02"):
            if r[k] is not None:
                t[f"{k}_by_rank"].setdefault(r["rank"], []).append(r[k])
    return out


# ----------------------------------------------------------------------------- outputs


def csv_text(rows: list[dict]) -> str:
    f = io.StringIO()
    if rows:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return f.getvalue()


def collect(spec, out: Path) -> tuple[list[dict], list[dict], dict]:
    """All model rows, all head rows and each cell's final analysis record, from the folder."""
    models, heads, finals = [], [], {}
    for name, cell in zip(spec.names, spec.cells, strict=True):
        folder = out / "cells" / cell.key()
        for snap in load_snapshots(folder):
            models.extend(snap["models"])
            heads.extend(snap["heads"])
        finals[name] = json.loads((folder / "analysis.json").read_text())
    return models, heads, finals


def load_snapshots(folder: Path) -> list[dict]:
    """The snapshot records (step_*.json) of a cell folder, in step order."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("step_*.json"))]


def final_rows(rows: list[dict], spec) -> dict[str, list[dict]]:
    """Per cell name, the rows of its last snapshot."""
    last = {n: c.steps for n, c in zip(spec.names, spec.cells, strict=True)}
    out: dict = {n: [] for n in spec.names}
    for r in rows:
        if r["step"] == last[r["name"]]:
            out[r["name"]].append(r)
    return out


def over_training(heads: list[dict], name: str) -> dict:
    """Per-model classes through one cell's training: the share of each class at every
    snapshot, churn of 'every' per 10,000 steps over the whole run and its last half, and the
    pre-registered limit rule where the run is long (>= 2 x CHURN_STEPS with 3+ snapshots in
    its last half)."""
    rows = [r for r in heads if r["name"] == name]
    by_step: dict = {}
    for (seed, step), aucs in aucs_by_model(rows).items():
        by_step.setdefault(step, {})[seed] = aucs
    steps = sorted(by_step)
    last = steps[-1]
    out = {
        "shares": {s: class_shares(list(by_step[s].values())) for s in steps},
        "churn": classes.churn(by_step, 0, last),
        "churn_last_half": classes.churn(by_step, last // 2, last),
        "limit": None,
    }
    if last >= 2 * classes.CHURN_STEPS and sum(s >= last // 2 for s in steps) >= 3:
        out["limit"] = classes.limit_rule(by_step)
    return out


def l2_used(finals: dict):
    """The L2 strength of the fitted weights, as the analyses state it."""
    for record in finals.values():
        for a in record.get("members", []):
            value = _get(a, "aggregation", "l2")
            if value is not None:
                return value
    return None
