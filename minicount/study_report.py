"""The study's figures (PNG, matplotlib Agg) and its written report (Markdown).

Every number printed here is computed from the run's own results; the verdicts are rules on
those numbers, stated next to them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .analysis.patterns import plot_patterns
from .study import (
    BALANCED_W01,
    SEMANTIC_AUC,
    SUPPRESSED_W02,
    by_setting,
    fmt,
    is_counting_head,
    mean_sd,
)

GAP = 0.01  # l-acc difference treated as real


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _m(rows, key):
    return mean_sd(r[key] for r in rows)[0]


# ----------------------------------------------------------------------------- figures


def draw_figures(results: dict, runs: list[dict], heads: list[dict], folder: Path) -> list[tuple]:
    """Write every figure into ``folder``; returns [(file name, caption)]."""
    folder.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    files = []
    for name, caption, draw in (
        (
            "accuracy.png",
            "Held-out l-acc and s-acc of the trained model and of three "
            "re-aggregations of its heads' EOS contributions (mean ± sd over seeds).",
            _accuracy,
        ),
        (
            "weights.png",
            "Fitted aggregation weights α (normalised to sum 1) by rank, one line per "
            "seed; dashed: the trained model's implicit weights σ_h/Σσ; grey: uniform 1/n_heads.",
            _weights,
        ),
        (
            "heads.png",
            "Every head of every model: semantics (ROC AUC of its contribution alone) vs "
            "syntax (l-acc alone); and its attention statistics w_01 vs w_02, marker size = fitted "
            "weight.",
            _heads,
        ),
        (
            "ablation.png",
            "l-acc with only a subset of heads kept (zero and mean ablation of the "
            "others), against the number kept; mean over seeds and subsets of that size.",
            _ablation,
        ),
        (
            "interventions.png",
            "Change in l-acc under interventions (mean ± sd over seeds).",
            _interventions,
        ),
        ("training.png", "Held-out l-acc during training (mean over seeds).", _training),
    ):
        fig = draw(plt, results, runs, heads)
        if fig is None:
            continue
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        files.append((name, caption))
    for result in results["settings"]:
        member = result["members"][0]
        example = member["analysis"].get("example")
        if example is None:
            continue
        name = f"patterns_{slug(result['setting']['name'])}.png"
        alpha = (member["analysis"]["aggregation"] or {}).get("alpha_fitted")
        plot_patterns(
            np.array(example["pattern"]),
            np.array(example["tokens"]),
            folder / name,
            title=f"{result['setting']['name']}, seed {member['seed']}: attention on an "
            "example string",
            weights=alpha,
        )
        files.append(
            (
                name,
                f"Attention patterns of {result['setting']['name']} (seed "
                f"{member['seed']}), α = fitted weight.",
            )
        )
    return files


def _bars(ax, labels, series, ylabel):
    """Grouped bars: series = [(name, [mean], [sd])]."""
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for i, (name, means, sds) in enumerate(series):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width, means, width, yerr=sds, label=name, capsize=2
        )
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)


def _accuracy(plt, results, runs, heads):
    groups = by_setting(runs)
    labels = list(groups)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("l_acc", "s_acc"), strict=True):
        series = []
        for name, key in (
            ("trained", metric),
            ("fitted weights", f"fitted_{metric}"),
            ("uniform weights", f"uniform_{metric}"),
            ("best head x n_heads", f"best_scaled_{metric}"),
        ):
            if key not in runs[0]:
                continue
            stats = [mean_sd(r[key] for r in groups[s]) for s in labels]
            series.append((name, [m for m, _, _ in stats], [sd for _, sd, _ in stats]))
        _bars(ax, labels, series, metric.replace("_", "-"))
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _weights(plt, results, runs, heads):
    groups = {s: rows for s, rows in by_setting(heads).items() if rows[0]["n_heads"] > 1}
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, (setting, rows) in zip(axes[0], groups.items(), strict=True):
        H = rows[0]["n_heads"]
        for seed in sorted({r["seed"] for r in rows}):
            mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["rank"])
            ranks = [r["rank"] for r in mine]
            line = ax.plot(
                ranks, [r["alpha_fitted"] for r in mine], "o-", ms=4, label=f"seed {seed}"
            )[0]
            ax.plot(ranks, [r["alpha_trained"] for r in mine], "--", color=line.get_color(), lw=1)
        ax.axhline(1 / H, color="grey", lw=1)
        ax.set_title(setting, fontsize=8)
        ax.set_xlabel("head rank (by fitted α)", fontsize=7)
        ax.set_xticks(range(1, H + 1))
    axes[0][0].set_ylabel("normalised weight")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _heads(plt, results, runs, heads):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    hs = sorted({r["n_heads"] for r in heads})
    cmap = plt.get_cmap("viridis")
    for i, H in enumerate(hs):
        rows = [r for r in heads if r["n_heads"] == H and r["auc_alone"] is not None]
        color = cmap(i / max(1, len(hs) - 1))
        ax1.scatter(
            [r["auc_alone"] for r in rows],
            [r["solo_l_acc"] for r in rows],
            s=14,
            color=color,
            label=f"{H} head(s)",
            alpha=0.7,
        )
        w = [
            (r["w_01"], r["w_02"], r["alpha_fitted"])
            for r in rows
            if r["w_01"] and r["w_02"] and r["w_01"] > 0 and r["w_02"] > 0
        ]
        if w:
            ax2.scatter(
                [a for a, _, _ in w],
                [b for _, b, _ in w],
                color=color,
                alpha=0.7,
                s=[10 + 120 * max(0.0, c if c is not None else 1.0) for _, _, c in w],
            )
    ax1.set_xlabel("ROC AUC of the head's EOS contribution alone (semantics)")
    ax1.set_ylabel("l-acc with only this head (syntax)")
    ax1.legend(fontsize=7)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.axvspan(*BALANCED_W01, color="green", alpha=0.1)
    ax2.axhline(SUPPRESSED_W02, color="grey", lw=1, ls="--")
    ax2.set_xlabel("w_01 (1 = 1s and 0s weighed alike)")
    ax2.set_ylabel("w_02 (small = 2s suppressed)")
    fig.tight_layout()
    return fig


def _ablation(plt, results, runs, heads):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    drawn = False
    for ax, mode in zip(axes, ("zero", "mean"), strict=True):
        for result in results["settings"]:
            H = result["setting"]["n_heads"]
            if H == 1:
                continue
            by_size: dict[int, list[float]] = {}
            for member in result["members"]:
                for r in member["analysis"]["ablation"][mode]:
                    if r["kind"] == "subset":
                        by_size.setdefault(len(r["kept"]), []).append(r["l_acc"])
            if by_size:
                sizes = sorted(by_size)
                ax.plot(
                    sizes,
                    [np.mean(by_size[k]) for k in sizes],
                    "o-",
                    ms=3,
                    label=result["setting"]["name"],
                )
                drawn = True
        ax.set_title(f"{mode} ablation of the other heads", fontsize=9)
        ax.set_xlabel("heads kept")
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_ylabel("l-acc")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return fig


INTERVENTIONS = (
    ("force w01=1 (top head)", "top_force_w01_delta_l_acc"),
    ("all heads ideal", "ideal_delta_l_acc"),
    ("mean values", "values_mean_delta_l_acc"),
    ("roll values", "values_roll_delta_l_acc"),
)


def _interventions(plt, results, runs, heads):
    groups = by_setting(runs)
    labels = list(groups)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    series = []
    for name, key in INTERVENTIONS:
        stats = [mean_sd(r[key] for r in groups[s]) for s in labels]
        series.append((name, [m for m, _, _ in stats], [sd for _, sd, _ in stats]))
    _bars(ax, labels, series, "Δ l-acc")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _training(plt, results, runs, heads):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for result in results["settings"]:
        curves = [m["analysis"]["curve"] for m in result["members"]]
        steps = [e["step"] for e in curves[0]]
        acc = np.mean([[e["l_acc"] for e in c] for c in curves], axis=0)
        ax.plot(steps, acc, "o-", ms=3, label=result["setting"]["name"])
    ax.set_xlabel("step")
    ax.set_ylabel("held-out l-acc")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- verdicts


def verdict(rows: list[dict], head_rows: list[dict]) -> tuple[str, str]:
    """(short label, sentence with numbers) on compete vs cooperate for one setting's seeds."""
    H = rows[0]["n_heads"]
    if H == 1:
        return "n/a", "one head: nothing to compete or cooperate with."
    n_eff = _m(rows, "n_eff_fitted")
    gap = _m(rows, "fitted_l_acc") - _m(rows, "uniform_l_acc")
    n_semantic = _m(rows, "semantic_heads")
    semantic = n_semantic / H
    counting = _m(rows, "counting_heads")
    numbers = (
        f"effective number of heads in the fitted weights {n_eff:.2f} of {H}; "
        f"{semantic:.0%} of heads separate the classes alone (AUC ≥ {SEMANTIC_AUC}); "
        f"{counting:.1f} balanced counting heads per model; uniform aggregation loses "
        f"{100 * gap:.1f} points of l-acc against fitted weights"
    )
    if n_eff <= 1.5:
        return "one head dominates", f"one head carries the decision ({numbers})."
    if semantic >= 0.75 and gap <= GAP:
        return "cooperate (pseudo-ensemble)", (
            f"the heads separate the classes alike and equal weights suffice ({numbers})."
        )
    if n_semantic >= 2 and n_eff >= 0.5 * H and gap > GAP:
        return "cooperate, non-uniformly", (
            "several heads carry the semantics but the output "
            f"layer must weigh them unequally ({numbers})."
        )
    if n_eff < 0.5 * H and gap > GAP:
        return "a few heads dominate", (
            f"most heads are sidelined and equal weights would let them in ({numbers})."
        )
    return "mixed", f"no clean picture ({numbers})."


def mean_abs_change(rows: list, keys: tuple) -> float:
    """Mean of |row[key]| over rows and keys, skipping missing (None) entries; nan if none."""
    values = [abs(r[k]) for r in rows for k in keys if r[k] is not None]
    return float(np.mean(values)) if values else float("nan")


def paper_claims(runs: list[dict], heads: list[dict]) -> list[tuple[str, str, str]]:
    """[(claim, verdict, evidence)] over the settings with more than one head."""
    multi = [r for r in runs if r["n_heads"] > 1]
    multi_heads = [r for r in heads if r["n_heads"] > 1]
    if not multi:
        return [("(all claims)", "not tested", "the run had no setting with more than one head")]
    groups = by_setting(multi)

    def per_setting(f):
        return "; ".join(f"{s}: {f(rows)}" for s, rows in groups.items())

    out = []
    frac = [r["semantic_heads"] / r["n_heads"] for r in multi]
    m = float(np.mean(frac))
    out.append(
        (
            "Every head alone separates the classes (a pseudo-ensemble on semantics).",
            "agrees" if m >= 0.75 else "partly" if m >= 0.4 else "disagrees",
            f"fraction of heads with AUC alone ≥ {SEMANTIC_AUC}: {m:.2f} over all models; "
            + per_setting(lambda rows: fmt([r["semantic_heads"] / r["n_heads"] for r in rows], 2)),
        )
    )
    gaps = [r["fitted_l_acc"] - r["uniform_l_acc"] for r in multi]
    close = [abs(r["fitted_l_acc"] - r["l_acc"]) for r in multi]
    share = float(np.mean([g > GAP for g in gaps]))
    out.append(
        (
            "Aggregation is non-uniform: uniform < fitted ≈ trained.",
            "agrees"
            if share >= 0.75 and np.mean(close) <= 2 * GAP
            else "partly"
            if share >= 0.25
            else "disagrees",
            f"uniform is > {GAP} below fitted in {share:.0%} of models; mean |fitted − trained| "
            f"l-acc {np.mean(close):.3f}; l-acc uniform / fitted / trained: "
            + per_setting(
                lambda rows: (
                    f"{fmt([r['uniform_l_acc'] for r in rows])} / "
                    f"{fmt([r['fitted_l_acc'] for r in rows])} / {fmt([r['l_acc'] for r in rows])}"
                )
            ),
        )
    )
    worse = float(np.mean([r["best_scaled_l_acc"] < r["l_acc"] - GAP for r in multi]))
    out.append(
        (
            "The heads are not a pure ensemble in syntax: no single head, scaled by n_heads, "
            "reproduces the model's EOS decisions.",
            "agrees" if worse >= 0.75 else "partly" if worse >= 0.25 else "disagrees",
            f"the best scaled head is > {GAP} l-acc below the model in {worse:.0%} of models; "
            "best scaled l-acc: "
            + per_setting(lambda rows: fmt([r["best_scaled_l_acc"] for r in rows])),
        )
    )
    top = [r for r in multi_heads if r["rank"] == 1]
    counting_top = float(np.mean([is_counting_head(r) for r in top])) if top else float("nan")
    out.append(
        (
            "The heads that matter balance 0s against 1s (w_01 ≈ 1) and suppress 2s (w_02 ≪ 1).",
            "agrees" if counting_top >= 0.75 else "partly" if counting_top >= 0.25 else "disagrees",
            f"the top-weighted head is a counting head (AUC ≥ {SEMANTIC_AUC}, w_01 in "
            f"{list(BALANCED_W01)}, w_02 < {SUPPRESSED_W02}) in {counting_top:.0%} of models; its "
            f"w_01 {fmt([r['w_01'] for r in top])}, w_02 {fmt([r['w_02'] for r in top])}",
        )
    )
    ed = mean_abs_change(multi, ("ideal_delta_l_acc", "top_force_w01_delta_l_acc"))
    out.append(
        (
            "Attention patterns matter: editing w_01 / w_02 changes the model's accuracy.",
            "agrees" if ed > GAP else "disagrees",
            f"mean |Δ l-acc| when the top head's w_01 is forced to 1 or every head is made ideal "
            f"(w_01 = 1, w_02 = 0): {ed:.3f}; all heads ideal: "
            + per_setting(lambda rows: fmt([r["ideal_delta_l_acc"] for r in rows]))
            + ". A negative change means the rest of the model is tuned to the heads' actual "
            "(imperfect) balance, not that balance is useless.",
        )
    )
    vd = mean_abs_change(multi, ("values_mean_delta_l_acc", "values_roll_delta_l_acc"))
    out.append(
        (
            "Value vectors matter little.",
            "agrees" if vd <= 2 * GAP else "partly" if vd <= 0.1 else "disagrees",
            f"mean |Δ l-acc| when value vectors are averaged or rolled across heads: {vd:.3f}; "
            "mean values / roll values: "
            + per_setting(
                lambda rows: (
                    f"{fmt([r['values_mean_delta_l_acc'] for r in rows])} / "
                    f"{fmt([r['values_roll_delta_l_acc'] for r in rows])}"
                )
            )
            + ". The paper's own value intervention is not public; these edits move value vectors "
            "between heads whose W_O differ, a strong test.",
        )
    )
    lin = [r["linear_label_l_acc"] for r in multi if r["linear_label_l_acc"] is not None]
    gap_lin = (
        float(
            np.mean(
                [
                    r["l_acc"] - r["linear_label_l_acc"]
                    for r in multi
                    if r["linear_label_l_acc"] is not None
                ]
            )
        )
        if lin
        else float("nan")
    )
    out.append(
        (
            "Performance follows a linear combination of the head outputs.",
            "agrees"
            if lin and gap_lin <= GAP
            else "partly"
            if lin and gap_lin <= 0.05
            else "disagrees",
            f"a logistic read-out of the head contributions alone reaches l-acc {fmt(lin)} (model "
            f"minus read-out: {gap_lin:.3f}); it agrees with the model's own EOS decisions on "
            f"{fmt([r['linear_decision_agreement'] for r in multi])} of positions",
        )
    )
    return out


# ----------------------------------------------------------------------------- report


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict, runs: list[dict], heads: list[dict], figures: list[tuple]) -> str:
    """The report as Markdown."""
    meta, preset = results["meta"], results["meta"]["preset"]
    groups, head_groups = by_setting(runs), by_setting(heads)
    n_seeds = len(preset["seeds"])
    s = []
    s.append("# Do attention heads compete or cooperate when counting? — minicount study\n")
    s.append(
        "Reproduction of the questions of Zsámboki et al. (arXiv 2502.06923) with minicount's "
        "hand-written transformer, following the project's reading of the paper (SPEC.md). "
        "Every number below was computed by this run.\n"
    )
    labels = {name: verdict(rows, head_groups[name])[0] for name, rows in groups.items()}
    s.append("**Short answer.** " + _summary_paragraph(groups, labels) + "\n")
    s.append("## What was run\n")
    s.append(f"- command: `{meta.get('command') or 'minicount reproduce'}`")
    s.append(
        f"- device: {meta['device']}; training and analysis took {meta.get('seconds', 0):.0f} s; "
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    )
    s.append(
        f"- {n_seeds} seeds per setting ({', '.join(map(str, preset['seeds']))}), trained "
        f"together as one ensemble; AdamW lr {preset['lr']}, batch {preset['batch_size']} "
        "strings, constant schedule, BCE on the next-set targets"
    )
    s.append(
        f"- models: one layer, attention only, no positional embedding (NoPE), no LayerNorm; "
        f"held-out set: {preset['n_eval']} strings of length 1..max_len (fixed seed), and "
        f"{preset['n_eval']} longer strings (max_len+1..2·max_len) for length generalisation\n"
    )
    s.append(
        _table(
            [
                "setting",
                "n_heads",
                "d_model",
                "d_head",
                "max_len",
                "BOS",
                "weight decay",
                "steps",
                "training time (all seeds)",
            ],
            [
                [
                    r["setting"]["name"],
                    r["setting"]["n_heads"],
                    r["setting"]["d_model"],
                    r["setting"]["d_head"],
                    r["setting"]["max_len"],
                    "yes" if r["setting"]["bos"] else "no",
                    r["setting"]["weight_decay"],
                    r["steps"],
                    f"{r['train_seconds']:.0f} s",
                ]
                for r in results["settings"]
            ],
        )
    )
    s.append(
        "\nMetrics are over every real position of the held-out strings (SPEC §3): **l-acc** "
        "(EOS decision right), **s-acc** (right at every position of a string), **ROC AUC** "
        "of the EOS score. *Fitted* and *uniform* re-aggregate the heads' standardised EOS "
        "contributions by logistic regression (per-head weights, or one shared weight; both "
        "with a bias and the direct path as offset; fitted and scored on the held-out set); "
        "*n_eff* = (Σ|α|)²/Σα² is the effective number of heads in a weighting (1 = one "
        "head, n_heads = uniform). Tables give mean ± sd over seeds.\n"
    )

    s.append("## Results\n")
    s.append("### 1. Accuracy and aggregation\n")
    s.append(
        _table(
            [
                "setting",
                "l-acc",
                "s-acc",
                "ROC AUC",
                "l-acc long",
                "l-acc uniform",
                "l-acc fitted",
                "s-acc uniform",
                "s-acc fitted",
                "n_eff fitted",
                "n_eff trained",
            ],
            [
                [name]
                + [
                    fmt([r[k] for r in rows])
                    for k in (
                        "l_acc",
                        "s_acc",
                        "roc_auc",
                        "long_l_acc",
                        "uniform_l_acc",
                        "fitted_l_acc",
                        "uniform_s_acc",
                        "fitted_s_acc",
                    )
                ]
                + [fmt([r[k] for r in rows], 2) for k in ("n_eff_fitted", "n_eff_trained")]
                for name, rows in groups.items()
            ],
        )
    )
    s.append("\n### 2. Heads: semantics vs syntax, ablation\n")
    s.append(
        f"Semantic head: its EOS contribution alone has ROC AUC ≥ {SEMANTIC_AUC}. Counting "
        f"head: semantic, w_01 in {list(BALANCED_W01)} and w_02 < {SUPPRESSED_W02}. *solo*: "
        "every other head zero-ablated; *scaled*: only this head, multiplied by n_heads "
        "(the pure-ensemble hypothesis); *min heads*: fewest heads whose zero-ablated "
        "subset keeps 99% of the model's l-acc.\n"
    )
    s.append(
        _table(
            [
                "setting",
                "semantic heads",
                "counting heads",
                "best solo l-acc",
                "best scaled l-acc",
                "best keep-one l-acc (mean abl.)",
                "worst leave-one-out l-acc",
                "min heads",
            ],
            [
                [
                    name,
                    fmt([r["semantic_heads"] for r in rows], 1),
                    fmt([r["counting_heads"] for r in rows], 1),
                ]
                + [
                    fmt([r[k] for r in rows])
                    for k in (
                        "best_solo_l_acc",
                        "best_scaled_l_acc",
                        "best_only_mean_l_acc",
                        "worst_leave_out_zero_l_acc",
                    )
                ]
                + [fmt([r["min_heads_99"] for r in rows], 1)]
                for name, rows in groups.items()
            ],
        )
    )
    s.append("\n### 3. Heads ranked by fitted weight\n")
    s.append(
        "Within each model the heads are ranked by their fitted weight α; each row is the "
        "mean ± sd over seeds of the head at that rank.\n"
    )
    for name, rows in head_groups.items():
        H = rows[0]["n_heads"]
        table = []
        for rank in range(1, H + 1):
            at = [r for r in rows if r["rank"] == rank]
            table.append(
                [rank]
                + [
                    fmt([r[k] for r in at])
                    for k in (
                        "alpha_fitted",
                        "alpha_trained",
                        "auc_alone",
                        "solo_l_acc",
                        "scaled_l_acc",
                        "w_01",
                        "w_02",
                        "bos_weight",
                    )
                ]
            )
        s.append(f"**{name}** (uniform weight 1/{H} = {1 / H:.3f})\n")
        s.append(
            _table(
                [
                    "rank",
                    "α fitted",
                    "α trained",
                    "AUC alone",
                    "solo l-acc",
                    "scaled l-acc",
                    "w_01",
                    "w_02",
                    "BOS weight",
                ],
                table,
            )
            + "\n"
        )
    s.append("### 4. Interventions (change in l-acc)\n")
    s.append(
        "Attention edits shift one head's pre-softmax scores for the keys of one token; "
        "value edits replace the value vectors (mean over heads, or head h takes head h+1's). "
        "*top head* = the head with the largest fitted weight.\n"
    )
    s.append(
        _table(
            [
                "setting",
                "force w_01=1 (top head)",
                "force w_02=0 (top head)",
                "all heads ideal",
                "mean values",
                "roll values",
            ],
            [
                [
                    name,
                    fmt([r["top_force_w01_delta_l_acc"] for r in rows]),
                    fmt([_top_w02(head_groups[name], r) for r in rows]),
                    fmt([r["ideal_delta_l_acc"] for r in rows]),
                    fmt([r["values_mean_delta_l_acc"] for r in rows]),
                    fmt([r["values_roll_delta_l_acc"] for r in rows]),
                ]
                for name, rows in groups.items()
            ],
        )
    )
    s.append("\n### 5. Linear combination of the heads\n")
    s.append(
        "Read-outs of the head contributions alone (no direct path): R² of a least-squares "
        "fit of the EOS score, agreement of a logistic fit with the model's own decisions, "
        "and l-acc / s-acc of a logistic fit to the labels.\n"
    )
    s.append(
        _table(
            ["setting", "R² (score)", "agreement (decisions)", "l-acc (labels)"],
            [
                [name]
                + [
                    fmt([r[k] for r in rows])
                    for k in ("linear_score_r2", "linear_decision_agreement", "linear_label_l_acc")
                ]
                for name, rows in groups.items()
            ],
        )
    )

    s.append("\n## Compete or cooperate?\n")
    for name, rows in groups.items():
        label, sentence = verdict(rows, head_groups[name])
        s.append(f"- **{name}: {label}** — {sentence}")
    s.append("")
    s.append("In summary: " + _summary_paragraph(groups, labels))
    s.append("\n## Against the paper's claims\n")
    s.append(
        "Verdicts are rules on the numbers (thresholds stated); *partly* means the claim "
        "holds in some models or settings but not most.\n"
    )
    s.append(
        _table(
            ["claim (paper, as read in SPEC.md)", "here", "evidence"],
            [[c, v, e] for c, v, e in paper_claims(runs, heads)],
        )
    )
    s.append("\n## Figures\n")
    for name, caption in figures:
        s.append(f"![{caption}](figures/{name})\n\n*{name}*: {caption}\n")
    s.append("## Caveats\n")
    short = [
        f"{r['setting']} seed {r['seed']} (l-acc {r['l_acc']:.3f})"
        for r in runs
        if r["l_acc"] < 0.99
    ]
    if short:
        s.append(
            "- Not fully trained (held-out l-acc < 0.99), included in every mean above: "
            + ", ".join(short)
            + ". More `--steps` would change these models most."
        )
    s.append(
        "- The fitted and uniform weightings are fitted and scored on the same held-out "
        "positions (n_heads + 1 parameters on thousands of positions)."
    )
    s.append("- Head types use fixed thresholds (above); results near a threshold can flip.")
    s.append(
        "- Short runs (few steps, few seeds) give noisy spreads; `--preset full` and "
        "`--seeds`/`--steps` scale the study up. A `--quick` run is a smoke test only."
    )
    s.append(
        "- Files: results.json (everything), runs.csv (one row per model), heads.csv (one row "
        "per head)."
    )
    return "\n".join(s) + "\n"


def _top_w02(head_rows: list[dict], run: dict):
    for r in head_rows:
        if r["seed"] == run["seed"] and r["rank"] == 1:
            return r["force_w02_delta_l_acc"]
    return None


def _summary_paragraph(groups: dict, labels: dict) -> str:
    multi = {n: rows for n, rows in groups.items() if rows[0]["n_heads"] > 1}
    if not multi:
        return "Only single-head models were trained, so the question does not arise."
    counts: dict[str, list[str]] = {}
    for name in multi:
        counts.setdefault(labels[name], []).append(name)
    parts = [f"{label}: {', '.join(names)}" for label, names in counts.items()]
    best = max(multi, key=lambda n: _m(multi[n], "n_eff_fitted") / multi[n][0]["n_heads"])
    tops = "; ".join(
        f"{n}: {fmt([r['top_alpha'] for r in rows], 2)} (1/n_heads = {1 / rows[0]['n_heads']:.2f})"
        for n, rows in multi.items()
    )
    gaps = "; ".join(
        f"{n}: {fmt([r['fitted_l_acc'] - r['uniform_l_acc'] for r in rows])}"
        for n, rows in multi.items()
    )
    first = "; ".join(parts)
    return (
        first[:1].upper() + first[1:] + f". The most even sharing of weight is in "
        f"**{best}** (n_eff {_m(multi[best], 'n_eff_fitted'):.2f} of "
        f"{multi[best][0]['n_heads']}). The largest fitted weight per model: {tops}. "
        f"l-acc lost by uniform against fitted weights: {gaps}."
    )
