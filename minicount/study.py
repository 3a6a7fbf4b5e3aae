"""The study (SPEC §4): train several seeds per setting, run every instrument, write a report.

    python -m minicount reproduce                    # the default, laptop-sized study
    python -m minicount reproduce --quick            # a smoke run for CI (seconds)
    python -m minicount reproduce --preset full      # more seeds and steps, and more knobs varied

A setting is one architecture and training recipe; its seeds are trained together as an
ensemble (``minicount.train(config, seed=[...])``) and every member is analysed on the fixed
held-out strings with ``analysis.analyze_model``. The run folder holds

    report.md      what was run, tables (mean ± sd over seeds), compete vs cooperate, the
                   paper's claims against these numbers
    results.json   everything: settings, per-seed analyses, training curves, timings
    runs.csv       one row per (setting, seed);  heads.csv  one row per (setting, seed, head)
    figures/*.png
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from . import __version__
from .analysis import analyze_model, jsonable
from .analysis.patterns import attention_patterns
from .backend import device_of, resolve_device, to_device, to_numpy
from .data import DataConfig, encode, eval_set
from .metrics import evaluate
from .model import ModelConfig
from .train import train

# thresholds used to name head types in the report
SEMANTIC_AUC = 0.9  # a head "separates the classes" when its contribution alone has AUC >= this
BALANCED_W01 = (0.8, 1.25)  # w_01 in this range: 1s and 0s weighed alike
SUPPRESSED_W02 = 0.2  # w_02 below this: 2s suppressed
EXAMPLE = "1020120121102211"  # the string drawn in the attention heat maps (cut to max_len)


@dataclass(frozen=True)
class Setting:
    """One architecture and training recipe of the study."""

    name: str
    n_heads: int = 4
    d_model: int = 32
    d_head: int = 8
    max_len: int = 32
    bos: bool = True
    weight_decay: float = 0.0
    steps_factor: float = 1.0  # x the preset's steps
    sweep: bool = True  # part of the head-count sweep (plotted against n_heads)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_head,
            n_ctx=2 * self.max_len + 1,
        )


# knobs that may decide compete vs cooperate (SPEC §4 "Study"), varied around n_heads = 4
VARIATIONS = {
    "paper-like": {"max_len": 64, "weight_decay": 0.1},
    "no BOS": {"bos": False},
    "max_len 64": {"max_len": 64},
    "weight decay 0.1": {"weight_decay": 0.1},
    "d_model 64, d_head 16": {"d_model": 64, "d_head": 16},
    "d_head 4": {"d_head": 4},
    "3x steps": {"steps_factor": 3.0},
}


@dataclass(frozen=True)
class Preset:
    """How big a study is."""

    heads: tuple = (1, 2, 4, 8)  # the head-count sweep
    seeds: tuple = (0, 1, 2, 3, 4)  # trained together as one ensemble per setting
    steps: int = 800
    batch_size: int = 128
    lr: float = 3e-3
    max_len: int = 32
    n_eval: int = 1024  # held-out strings analysed per setting
    variations: tuple = ("paper-like", "no BOS")  # names in VARIATIONS, each at n_heads = 4
    figures: bool = True
    subsets: bool = True  # every subset of heads in the ablation


PRESETS = {
    "quick": Preset(
        heads=(1, 2),
        seeds=(0, 1),
        steps=30,
        batch_size=32,
        max_len=6,
        n_eval=48,
        variations=("no BOS",),
    ),
    "default": Preset(),
    "full": Preset(
        seeds=(0, 1, 2, 3, 4), steps=2000, batch_size=256, n_eval=2048, variations=tuple(VARIATIONS)
    ),
}


def study_settings(preset: Preset) -> list[Setting]:
    """The head sweep, then each variation of the n_heads = 4 model."""
    settings = [Setting(name=f"H={h}", n_heads=h, max_len=preset.max_len) for h in preset.heads]
    base = Setting(name="", n_heads=4, max_len=preset.max_len, sweep=False)
    for label in preset.variations:
        if label not in VARIATIONS:
            raise ValueError(f"unknown variation {label!r}: choose from {sorted(VARIATIONS)}")
        settings.append(replace(base, name=f"H=4, {label}", **VARIATIONS[label]))
    return settings


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit BLAS to n threads while the study runs (small matrices: more threads mostly spin,
    and on a shared machine they slow everything down). A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        n = None
    if n is None:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


# ----------------------------------------------------------------------------- running


def members_of(params: dict) -> list[dict]:
    """An ensemble's members as single models (a single model is a list of one)."""
    if params["embed.W_E"].ndim == 2:
        return [params]
    return [{k: v[i] for k, v in params.items()} for i in range(params["embed.W_E"].shape[0])]


def member_curve(history: dict, i: int, n_members: int) -> list[dict]:
    """Held-out metrics of member i along training: [{"step", "l_acc", "s_acc", "roc_auc"}]."""
    pick = (lambda v: v[i]) if n_members > 1 else (lambda v: v)
    return [
        {"step": e["step"], **{k: pick(e[k]) for k in ("l_acc", "s_acc", "roc_auc", "loss")}}
        for e in history["eval"]
    ]


def example_pattern(params: dict, config: ModelConfig, setting: Setting):
    """(pattern [H, T, T], tokens [T]) of the example string, host arrays."""
    tokens = encode(EXAMPLE[: setting.max_len], bos=setting.bos)[None]  # [1, T]
    tokens_d = to_device(tokens, device_of(params["embed.W_E"]))
    pattern = attention_patterns(params, tokens_d, config)[0, 0]  # [H, T, T]
    return to_numpy(pattern), tokens[0]


def run_setting(setting: Setting, preset: Preset, device: str, log) -> dict:
    """Train one setting's seeds as an ensemble and analyse every member."""
    config, seeds = setting.model_config(), preset.seeds
    n_steps = max(1, round(preset.steps * setting.steps_factor))
    t0 = time.perf_counter()
    params, history = train(
        config,
        seed=list(seeds),
        steps=n_steps,
        batch_size=preset.batch_size,
        max_len=setting.max_len,
        lr=preset.lr,
        device=device,
        weight_decay=setting.weight_decay,
        bos=setting.bos,
        eval_every=max(1, n_steps // 5),
        n_eval=min(512, preset.n_eval),
        progress=log is not None,
    )
    train_s = time.perf_counter() - t0
    data = DataConfig(max_len=setting.max_len, bos=setting.bos, n_eval=preset.n_eval)
    held_out, long = eval_set(data), eval_set(data, long=True)
    members = []
    for i, (seed, member) in enumerate(zip(seeds, members_of(params), strict=True)):
        t1 = time.perf_counter()
        member = to_device(member, device)
        analysis = analyze_model(member, *held_out, config, subsets=preset.subsets)
        analysis["long"] = jsonable(evaluate(member, *long, config))
        analysis["curve"] = member_curve(history, i, len(seeds))
        if i == 0:
            pattern, tokens = example_pattern(member, config, setting)
            analysis["example"] = {"tokens": tokens.tolist(), "pattern": pattern.tolist()}
        members.append({"seed": int(seed), "analysis": analysis})
        if log:
            log(
                f"  analysed seed {seed}: l-acc {analysis['metrics']['l_acc']:.4f}, "
                f"s-acc {analysis['metrics']['s_acc']:.4f} ({time.perf_counter() - t1:.1f}s)"
            )
    return {
        "setting": asdict(setting),
        "model": config.to_dict(),
        "steps": n_steps,
        "train_seconds": train_s,
        "members": members,
    }


def run_study(
    preset: Preset,
    *,
    device: str = "cpu",
    out="runs/reproduce",
    progress: bool = True,
    command: str = "",
    threads: int | None = 1,
) -> dict:
    """Run every setting of ``preset`` and write the run folder; returns the results dict."""
    device = resolve_device(device)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = (
        (lambda m: print(f"[{time.perf_counter() - t0:7.1f}s] {m}", file=sys.stderr, flush=True))
        if progress
        else None
    )
    settings = study_settings(preset)
    results = {
        "meta": {
            "command": command,
            "preset": jsonable(asdict(preset)),
            "device": device,
            "versions": {
                "minicount": __version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            },
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "settings": [],
    }
    with blas_threads(threads if device == "cpu" else None):
        for k, setting in enumerate(settings, 1):
            if log:
                log(
                    f"[{k}/{len(settings)}] {setting.name}: training seeds "
                    f"{','.join(map(str, preset.seeds))} for "
                    f"{round(preset.steps * setting.steps_factor)} steps"
                )
            results["settings"].append(run_setting(setting, preset, device, log))
        results["meta"]["seconds"] = time.perf_counter() - t0
        write_outputs(results, out, figures=preset.figures, log=log)
    results["meta"]["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(jsonable(results), allow_nan=False))
    if log:
        log(f"done: {out / 'report.md'}")
    return results


# ----------------------------------------------------------------------------- tables


def _get(d, *path):
    """d[path[0]][path[1]]...; None as soon as a level is None."""
    for p in path:
        if d is None:
            return None
        d = d[p]
    return d


def _best(rows, kind, key="l_acc", pick=max):
    values = [r[key] for r in rows if r["kind"] == kind and r[key] is not None]
    return pick(values) if values else None


def _min_heads_for(subset_rows, target):
    """Fewest kept heads whose zero-ablated model reaches l-acc >= target (None if none)."""
    sizes = [len(r["kept"]) for r in subset_rows if r["kind"] == "subset" and r["l_acc"] >= target]
    return min(sizes) if sizes else None


def _intervention(a, name, heads=None):
    rows = [
        r
        for r in a.get("interventions", [])
        if r["name"] == name and (heads is None or r["heads"] == heads)
    ]
    return rows[0]["delta"]["l_acc"] if rows else None


def head_rows(setting: dict, member: dict) -> list[dict]:
    """One row per head of one trained model: the per-head numbers of every instrument."""
    a = member["analysis"]
    H = setting["n_heads"]
    agg = a["aggregation"] or {}
    alpha = agg.get("alpha_fitted") or [None] * H
    order = sorted(range(H), key=lambda h: -(alpha[h] if alpha[h] is not None else 0.0))
    rows = []
    for h in range(H):
        only = {
            m: [r for r in a["ablation"][m] if r["kind"] == "only" and r["kept"] == [h]]
            for m in ("zero", "mean")
        }
        out = [r for r in a["ablation"]["zero"] if r["kind"] == "leave_out" and h not in r["kept"]]
        out_mean = [
            r for r in a["ablation"]["mean"] if r["kind"] == "leave_out" and h not in r["kept"]
        ]
        sem = a["semantics"][h]
        rows.append({
            "setting": setting["name"], "n_heads": H, "seed": member["seed"], "head": h,
            "rank": order.index(h) + 1,
            "alpha_fitted": alpha[h], "alpha_trained": _get(agg, "alpha_trained", h),
            "auc_alone": sem["auc_alone"],
            "solo_l_acc": sem["solo"]["l_acc"], "solo_s_acc": sem["solo"]["s_acc"],
            "scaled_l_acc": sem["scaled"]["l_acc"], "scaled_s_acc": sem["scaled"]["s_acc"],
            "w_01": a["attention"]["w_01"][h], "w_02": a["attention"]["w_02"][h],
            "bos_weight": a["attention"]["bos_weight"][h],
            "only_zero_l_acc": only["zero"][0]["l_acc"],
            "only_mean_l_acc": only["mean"][0]["l_acc"],
            "leave_out_zero_l_acc": out[0]["l_acc"] if out and H > 1 else None,
            "leave_out_mean_l_acc": out_mean[0]["l_acc"] if out_mean and H > 1 else None,
            "force_w01_delta_l_acc": _intervention(a, "force_w01=1", [h]),
            "force_w02_delta_l_acc": _intervention(a, "force_w02=0", [h]),
            "contribution_pos": _get(a, "contributions", "mean_pos", h),
            "contribution_neg": _get(a, "contributions", "mean_neg", h),
        })  # fmt: skip
    return rows


def is_counting_head(row: dict) -> bool:
    """Separates the classes alone, weighs 1s like 0s, suppresses 2s."""
    auc, w01, w02 = row["auc_alone"], row["w_01"], row["w_02"]
    return (
        auc is not None
        and auc >= SEMANTIC_AUC
        and w01 is not None
        and w02 is not None
        and BALANCED_W01[0] <= w01 <= BALANCED_W01[1]
        and w02 < SUPPRESSED_W02
    )


def run_row(result: dict, member: dict) -> dict:
    """One row per trained model: the model-level numbers of every instrument."""
    s, a = result["setting"], member["analysis"]
    heads = head_rows(s, member)
    agg = a["aggregation"] or {}
    zero = a["ablation"]["zero"]
    top = min(heads, key=lambda r: r["rank"])["head"]
    return {
        "setting": s["name"], "n_heads": s["n_heads"], "seed": member["seed"],
        "d_model": s["d_model"], "d_head": s["d_head"], "max_len": s["max_len"], "bos": s["bos"],
        "weight_decay": s["weight_decay"], "steps": result["steps"],
        "l_acc": a["metrics"]["l_acc"], "s_acc": a["metrics"]["s_acc"],
        "roc_auc": a["metrics"]["roc_auc"], "loss": a["metrics"]["loss"],
        "long_l_acc": a["long"]["l_acc"], "long_s_acc": a["long"]["s_acc"],
        "uniform_l_acc": _get(agg, "uniform", "l_acc"),
        "uniform_s_acc": _get(agg, "uniform", "s_acc"),
        "fitted_l_acc": _get(agg, "fitted", "l_acc"), "fitted_s_acc": _get(agg, "fitted", "s_acc"),
        "n_eff_fitted": agg.get("n_eff_fitted"), "n_eff_trained": agg.get("n_eff_trained"),
        "top_alpha": max((r["alpha_fitted"] for r in heads if r["alpha_fitted"] is not None),
                         default=None),
        "semantic_heads": sum(r["auc_alone"] is not None and r["auc_alone"] >= SEMANTIC_AUC
                              for r in heads),
        "counting_heads": sum(is_counting_head(r) for r in heads),
        "best_solo_l_acc": max(r["solo_l_acc"] for r in heads),
        "best_scaled_l_acc": max(r["scaled_l_acc"] for r in heads),
        "best_only_mean_l_acc": _best(a["ablation"]["mean"], "only"),
        "worst_leave_out_zero_l_acc": (_best(zero, "leave_out", pick=min)
                                       if s["n_heads"] > 1 else None),
        "min_heads_99": _min_heads_for(zero, 0.99 * a["metrics"]["l_acc"]),
        "values_mean_delta_l_acc": _intervention(a, "mean_values"),
        "values_roll_delta_l_acc": _intervention(a, "roll_values"),
        "ideal_delta_l_acc": _intervention(a, "all_heads_ideal"),
        "top_force_w01_delta_l_acc": _intervention(a, "force_w01=1", [top]),
        "linear_label_l_acc": _get(a, "linear", "labels", "l_acc"),
        "linear_decision_agreement": _get(a, "linear", "decision_agreement"),
        "linear_score_r2": _get(a, "linear", "score_r2"),
    }  # fmt: skip


def all_rows(results: dict) -> tuple[list[dict], list[dict]]:
    runs, heads = [], []
    for result in results["settings"]:
        for member in result["members"]:
            runs.append(run_row(result, member))
            heads.extend(head_rows(result["setting"], member))
    return runs, heads


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the non-missing values; nan where there are none."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def fmt(values, digits: int = 3) -> str:
    """'mean ± sd' of a list of numbers (missing ones skipped), '–' if none."""
    m, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def by_setting(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)
    return groups


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_outputs(results: dict, out: Path, *, figures: bool = True, log=None) -> None:
    """runs.csv, heads.csv, figures/*.png and report.md from the results dict."""
    from . import study_report as report

    runs, heads = all_rows(results)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "heads.csv", heads)
    figure_files = []
    if figures:
        if log:
            log("drawing figures")
        figure_files = report.draw_figures(results, runs, heads, out / "figures")
    (out / "report.md").write_text(report.render(results, runs, heads, figure_files))
