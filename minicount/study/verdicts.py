"""From rows to answers: statistics over seeds per cell, the verdict rules (the per-model
classes first, the earlier mean-based rules beside them), their sensitivity to neighbouring
cut-offs, the claims of the paper, and the classes through training. Everything the report
prints is computed here or in rows.py; report.py only formats it.

    cell_statistics, class_statistics   intervals over seeds per cell
    verdict, aggregation_verdict        the class-based verdict and the weighting rule
    mean_verdict, l2_verdicts           the earlier mean-based verdict, at every L2 strength
    sensitivity, stability              each label at neighbouring cut-offs
    claims, short_answer                the paper's claims, the report's first lines
    over_training                       per-model classes and churn through one cell's training
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..stats import Interval, log_summary, mean_ci, proportion_ci
from . import classes
from .classes import CLASSES, SHARE_CUT, aucs_by_model, class_shares, model_class
from .rows import BALANCED_W01, SEMANTIC_AUC, SUPPRESSED_W02

GAP = 0.01  # l-acc difference treated as real
MOST_HEADS = 0.75  # a share of semantic heads above this: most heads carry the count
DOMINANT_N_EFF = 1.5  # fitted weights with n_eff below this: one head carries the decision
MARGIN_RATIO = 1.1  # a fitted margin this many times the equal-weight one: the weights matter
MAJORITY = 0.5  # the share rules (scaled head below the model, top head counting) hold above this
REFERENCE = "calibrated"  # the reference for "uniform" the verdict uses (docs/method.md §4)
# the neighbouring cut-offs of the sensitivity table
SENSITIVITY = {"auc": (0.8, 0.85, 0.95, 0.99), "share": (0.6, 0.75, 0.9),
               "gap": (0.005, 0.02, 0.03)}  # fmt: skip

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
              f"l-acc below the model > {MAJORITY}", "scaled_below_model", MAJORITY, True,
              {"pct": True}),
        entry("The top-weighted head counts: w_01 ≈ 1 and w_02 ≪ 1.",
              f"share of models whose top head is a counting head (w_01 in {list(BALANCED_W01)}, "
              f"w_02 < {SUPPRESSED_W02}) > {MAJORITY}", "top_counting", MAJORITY, True,
              {"pct": True}),
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


# ----------------------------------------------------------------------------- through training


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
    by_class = {c: classes.churn(by_step, last // 2, last, c) for c in CLASSES}
    out = {
        "shares": {s: class_shares(list(by_step[s].values())) for s in steps},
        "churn": classes.churn(by_step, 0, last),
        "churn_last_half": by_class["every"],
        "churn_by_class": by_class,
        "limit": None,
    }
    if last >= 2 * classes.CHURN_STEPS and sum(s >= last // 2 for s in steps) >= 3:
        out["limit"] = classes.limit_rule(by_step)
    return out
