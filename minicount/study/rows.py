"""From analyses to rows: one table row per model and per head at each snapshot, read from
the analysis records, and the run folder's rows read back. Statistics, verdicts and claims
over these rows are verdicts.py; report.py only formats them.

Import direction: run -> summary -> verdicts -> rows; report -> verdicts, rows (report
formats, summary writes the files).

Definitions used throughout (docs/method.md says more):
    semantic head   its EOS contribution alone separates the classes in either direction:
                    max(AUC, 1 - AUC) >= SEMANTIC_AUC (classes.separates); auc_sign says
                    which direction
    counting head   semantic, and its attention weighs 1s like 0s (w_01 in BALANCED_W01) and
                    suppresses 2s (w_02 < SUPPRESSED_W02)
    gap             l-acc of the fitted per-head weighting minus that of the best uniform
                    weighting (one shared scale and bias chosen for accuracy)
    n_eff           participation ratio of the fitted weights, (sum |a|)^2 / sum a^2

It reads a run folder's snapshot files; summary.summarise writes the tables.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from .classes import AUC_CUT, model_class, separates

SEMANTIC_AUC = AUC_CUT  # a head separates the classes when max(AUC, 1 - AUC) >= this
BALANCED_W01 = (0.8, 1.25)  # w_01 in this range: 1s and 0s weighed alike
SUPPRESSED_W02 = 0.2  # w_02 below this: 2s suppressed


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
    """The one definition of a counting head: it separates the classes (classes.separates)
    and its attention weighs 1s like 0s and suppresses 2s. None anywhere: not counting."""
    return (
        separates(auc2, SEMANTIC_AUC) and w01 is not None and w02 is not None
        and BALANCED_W01[0] <= w01 <= BALANCED_W01[1] and w02 < SUPPRESSED_W02
    )  # fmt: skip


def head_rows(knobs: dict, seed: int, step: int, a: dict) -> list[dict]:
    """One row per head of one model at one snapshot, read from its analysis record ``a``
    (analyze_model's or analyze_ensemble's): the two-sided AUC and its sign, the weight
    shares and signs are the record's own fields; semantic and counting apply this
    module's cut-offs to them."""
    H = knobs["n_heads"]
    agg = a.get("aggregation") or {}
    shares = agg.get("alpha_fitted") or [None] * H  # None: every fitted weight is 0
    signs = agg.get("sign_fitted") or [None] * H
    trained = agg.get("alpha_trained") or [None] * H
    order = sorted(range(H), key=lambda h: -(shares[h] or 0.0))
    rows = []
    for h in range(H):
        sem = a["semantics"][h]
        auc2 = sem["auc_two_sided"]
        w01, w02 = a["attention"]["w_01"][h], a["attention"]["w_02"][h]
        rows.append({
            **knobs, "seed": seed, "step": step, "head": h, "rank": order.index(h) + 1,
            "auc": sem["auc_alone"], "auc_two_sided": auc2, "auc_sign": sem["auc_sign"],
            "semantic": separates(auc2, SEMANTIC_AUC),
            "counting": is_counting(auc2, w01, w02),
            "solo_l_acc": sem["solo"]["l_acc"], "scaled_l_acc": sem["scaled"]["l_acc"],
            "fitted_share": shares[h], "fitted_sign": signs[h], "trained_share": trained[h],
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


def l2_used(finals: dict):
    """The L2 strength of the fitted weights, as the analyses state it."""
    for record in finals.values():
        for a in record.get("members", []):
            value = _get(a, "aggregation", "l2")
            if value is not None:
                return value
    return None
