"""The sweep's figures (PNG) and report (Markdown): formatting only. Every number comes from
minicount/study/rows.py; each section of the report is one small function.

It writes PNG figures into the run folder it is given (atomically, through safeio) and
returns the report's text; figures are matplotlib Figure objects, pyplot's backend untouched.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..analysis.patterns import plot_patterns
from ..safeio import atomic_write
from ..stats import log_summary, mean_ci
from .classes import CLASSES, SHARE_CUT, aucs_by_model, class_shares
from .rows import (
    BALANCED_W01,
    SEMANTIC_AUC,
    SUPPRESSED_W02,
    head_rows,
    model_row,
    trajectories,
)
from .verdicts import DOMINANT_N_EFF, GAP, MARGIN_RATIO, MOST_HEADS

# ----------------------------------------------------------------------------- figures


class _Figures:
    """The two pieces of pyplot the figures use, made from matplotlib.figure.Figure so that
    drawing never switches matplotlib's global backend (a notebook's included)."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def get_cmap(name: str):
        import matplotlib

        return matplotlib.colormaps[name]

    @staticmethod
    def close(fig) -> None:
        pass


def _plt():
    return _Figures


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _colors(plt, n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def draw_figures(spec, models, heads, finals, stats, folder: Path) -> list[tuple]:
    """Write every figure into folder; returns [(file name, caption)]."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):  # an earlier summary's figures: redrawn or gone
        old.unlink()
    plt = _plt()
    files = []
    for name, caption, draw in FIGURES:
        fig = draw(plt, spec, models, heads, stats)
        if fig is None:
            continue
        _save(plt, fig, folder / name)
        files.append((name, caption))
    files += _pattern_figures(plt, spec, finals, heads, folder)
    return files


def _save(plt, fig, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def _accuracy(plt, spec, models, heads, stats):
    names = list(spec.names)
    series = (("trained model", "l_acc"), ("fitted per-head weights", "fitted_l_acc"),
              ("best uniform weighting", "uniform_l_acc"),
              ("log-loss uniform weighting", "uniform_logloss_l_acc"))  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4))
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for i, (label, key) in enumerate(series):
        iv = [stats[n][key] for n in names]
        mean = np.array([s.value for s in iv])
        err = np.array([[s.value - s.low for s in iv], [s.high - s.value for s in iv]])
        ax.bar(x + (i - 1.5) * width, mean, width, yerr=np.nan_to_num(err), capsize=2, label=label)
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    lows = [stats[n][k].low for n in names for _, k in series if stats[n][k].n]
    ax.set_ylim(max(0.0, min(lows, default=0.5) - 0.05), 1.01)
    ax.set_ylabel("held-out l-acc (mean over seeds)")
    ax.set_xlabel("setting (cell)")
    ax.set_title("Accuracy of the model and of re-weighted head contributions\n"
                 "(bars: 95% t interval over seeds)", fontsize=10)  # fmt: skip
    ax.legend(fontsize=7, loc="lower left")
    return fig


ROLE_PANELS = (
    ("semantic_heads", "semantic heads per model", f"max(AUC, 1−AUC) ≥ {SEMANTIC_AUC}"),
    ("counting_heads", "counting heads per model",
     f"semantic, w_01 in {list(BALANCED_W01)}, w_02 < {SUPPRESSED_W02}"),
    ("n_eff_fitted", "n_eff of fitted weights", "1 = one head, n_heads = uniform"),
    ("gap", "fitted − best uniform l-acc", f"> {GAP}: equal weights lose accuracy"),
)  # fmt: skip


def _mean_with_band(ax, by_step: dict, key: str, color, label: str) -> None:
    """One setting's mean over seeds of ``key`` at each step, with its 95% t band."""
    steps = sorted(by_step)
    iv = [mean_ci(by_step[s][key]) for s in steps]
    ax.plot(steps, [s.value for s in iv], "o-", ms=3, color=color, label=label)
    ax.fill_between(steps, [s.low for s in iv], [s.high for s in iv], color=color, alpha=0.15,
                    lw=0)  # fmt: skip


def _roles(plt, spec, models, heads, stats):
    traj = _trajectories(models, heads)
    if traj is None:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    colors = _colors(plt, len(spec.names))
    for ax, (key, title, note) in zip(axes.flat, ROLE_PANELS, strict=True):
        for color, name in zip(colors, spec.names, strict=True):
            _mean_with_band(ax, traj[name], key, color, name)
        _log_steps(ax, sorted({s for t in traj.values() for s in t}))
        ax.set_title(f"{title}\n({note})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("training step (log scale)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Head roles through training: mean over seeds, band = 95% t interval")
    fig.tight_layout()
    return fig


CLASS_COLORS = {"every": "tab:green", "some": "tab:blue", "one": "tab:red", "none": "tab:gray"}


def _classes_figure(plt, spec, models, heads, stats):
    names = [n for n, c in zip(spec.names, spec.cells, strict=True) if c.n_heads > 1]
    by_cell: dict = {}
    for r in heads:
        if r["name"] in names:
            by_cell.setdefault(r["name"], []).append(r)
    steps_of = {n: sorted({r["step"] for r in rows}) for n, rows in by_cell.items()}
    if not by_cell or max(len(s) for s in steps_of.values()) < 2:
        return None
    cols = min(3, len(by_cell))
    rows_n = -(-len(by_cell) // cols)
    width = 4.2 if cols > 1 else 6.5
    fig, axes = plt.subplots(rows_n, cols, figsize=(width * cols, 3.2 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, by_cell, strict=False):
        aucs = aucs_by_model(by_cell[name])
        steps = steps_of[name]
        shares = [class_shares([a for (_, st), a in aucs.items() if st == s]) for s in steps]
        for c in CLASSES:
            v = [sh[c] for sh in shares]
            ax.plot(steps, [x.value for x in v], "o-", ms=3, color=CLASS_COLORS[c], label=c)
            ax.fill_between(steps, [x.low for x in v], [x.high for x in v],
                            color=CLASS_COLORS[c], alpha=0.15)  # fmt: skip
        _log_steps(ax, steps)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step (log scale)")
        ax.set_ylabel("share of models")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(by_cell) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, title="class", title_fontsize=7)
    fig.suptitle("Per-model classes through training: share of models, band = Wilson 95%")
    fig.tight_layout()
    return fig


def _training(plt, spec, models, heads, stats):
    traj = _trajectories(models, heads)
    if traj is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for color, name in zip(_colors(plt, len(spec.names)), spec.names, strict=True):
        _mean_with_band(ax, traj[name], "l_acc", color, name)
    _log_steps(ax, sorted({s for t in traj.values() for s in t}))
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("held-out l-acc")
    ax.set_title("Learning curves: mean over seeds, band = 95% t interval", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _ratios(plt, spec, models, heads, stats):
    traj = _trajectories(models, heads)
    if traj is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    colors = _colors(plt, len(spec.names))
    for ax, key, title in ((axes[0], "w_01", "w_01 (1 = 1s weighed like 0s)"),
                           (axes[1], "w_02", "w_02 (small = 2s suppressed)")):  # fmt: skip
        for color, name in zip(colors, spec.names, strict=True):
            steps = sorted(traj[name])
            for rank, style in ((1, "-"), (2, ":")):
                summ = [log_summary(traj[name][s][f"{key}_by_rank"].get(rank, [])) for s in steps]
                if not any(s.n for s in summ):
                    continue
                ax.plot(steps, [s.median for s in summ], style, color=color,
                        label=name if rank == 1 else None)  # fmt: skip
                if rank == 1:
                    ax.fill_between(steps, [s.q25 for s in summ], [s.q75 for s in summ],
                                    color=color, alpha=0.15, lw=0)  # fmt: skip
        _log_steps(ax, sorted({s for t in traj.values() for s in t}))
        ax.set_yscale("log")
        ax.set_xlabel("training step (log scale)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].axhspan(*BALANCED_W01, color="green", alpha=0.1)
    axes[1].axhline(SUPPRESSED_W02, color="grey", ls="--", lw=1)
    axes[0].legend(fontsize=7)
    fig.suptitle("Attention ratios of the top-weighted head (solid: median, band: IQR over "
                 "seeds) and of the second (dotted median); log scales", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def _trajectories(models, heads):
    """results.trajectories, or None when no cell has two snapshots (nothing to draw)."""
    traj = trajectories(models, heads)
    return None if all(len(t) < 2 for t in traj.values()) else traj


def _log_steps(ax, steps) -> None:
    """A log-scaled step axis labelled with the snapshot steps themselves."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    shown = []
    for s in sorted(steps, reverse=True):  # the last step always; skip labels that would touch
        if not shown or shown[-1] / s >= 1.4:
            shown.append(s)
    label = lambda s: f"{s // 1000}k" if s >= 10_000 and s % 1000 == 0 else str(s)  # noqa: E731
    ax.set_xticks(shown, [label(s) for s in shown], fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _last(rows, spec):
    last = {n: c.steps for n, c in zip(spec.names, spec.cells, strict=True)}
    return [r for r in rows if r["step"] == last[r["name"]]]


def _heads(plt, spec, models, heads, stats):
    final = _last(heads, spec)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for color, name in zip(_colors(plt, len(spec.names)), spec.names, strict=True):
        rows = [r for r in final if r["name"] == name and r["auc_two_sided"] is not None]
        marker = ["o" if r["auc_sign"] == 1 else "x" for r in rows]
        for m in ("o", "x"):
            sel = [r for r, k in zip(rows, marker, strict=True) if k == m]
            ax1.scatter(
                [r["auc_two_sided"] for r in sel],
                [r["solo_l_acc"] for r in sel],
                s=14,
                marker=m,
                color=color,
                alpha=0.7,
                label=name if m == "o" else None,
            )
        w = [r for r in rows if (r["w_01"] or 0) > 0 and (r["w_02"] or 0) > 0]
        ax2.scatter([r["w_01"] for r in w], [r["w_02"] for r in w], color=color, alpha=0.6,
                    s=[8 + 100 * (r["fitted_share"] or 0) for r in w])  # fmt: skip
    ax1.axvline(SEMANTIC_AUC, color="grey", ls="--", lw=1)
    ax1.set_xlabel("max(AUC, 1 − AUC) of the head's EOS contribution (semantics)")
    ax1.set_ylabel("l-acc with only this head (syntax)")
    ax1.set_title("Each head at the last step (o: AUC ≥ 0.5, x: reversed sign)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.axvspan(*BALANCED_W01, color="green", alpha=0.1, label="balanced w_01")
    ax2.axhline(SUPPRESSED_W02, color="grey", lw=1, ls="--", label=f"w_02 = {SUPPRESSED_W02}")
    ax2.set_xlabel("w_01 (log scale)")
    ax2.set_ylabel("w_02 (log scale)")
    ax2.set_title("Attention ratios; marker area = fitted weight share", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _weights(plt, spec, models, heads, stats):
    final = [r for r in _last(heads, spec) if r["n_heads"] > 1 and r["fitted_share"] is not None]
    names = [n for n in spec.names if any(r["name"] == n for r in final)]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names) + 1, 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in final if r["name"] == name]
        H = rows[0]["n_heads"]
        for key, label, style in (("fitted_share", "fitted", "o-"),
                                  ("trained_share", "trained σ_h", "s--")):  # fmt: skip
            by_rank = [[r[key] for r in rows if r["rank"] == k and r[key] is not None]
                       for k in range(1, H + 1)]  # fmt: skip
            med = [np.median(v) if v else np.nan for v in by_rank]
            lo = [np.quantile(v, 0.25) if v else np.nan for v in by_rank]
            hi = [np.quantile(v, 0.75) if v else np.nan for v in by_rank]
            ranks = np.arange(1, H + 1)
            ax.errorbar(ranks, med, yerr=[np.subtract(med, lo), np.subtract(hi, med)], fmt=style,
                        ms=4, capsize=2, label=label)  # fmt: skip
        ax.axhline(1 / H, color="grey", lw=1, label="uniform 1/n_heads")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("head rank by fitted share")
        ax.set_xticks(range(1, H + 1))
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("weight share |α_h| / Σ|α|")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("Weight shares at the last step: median and IQR over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _phase(plt, spec, models, heads, stats):
    """Heat maps over the first two knobs the sweep varies (others averaged)."""
    knobs = [f.name for f in fields(spec.cells[0])]
    varied = [k for k in knobs if len({getattr(c, k) for c in spec.cells}) > 1]
    if len(varied) < 2:
        return None
    kx, ky = varied[:2]
    xs = sorted({getattr(c, kx) for c in spec.cells})
    ys = sorted({getattr(c, ky) for c in spec.cells})
    present = {(getattr(c, kx), getattr(c, ky)) for c in spec.cells}
    if len(present) < len(xs) * len(ys):  # not a grid over these two knobs: no map
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = ((axes[0], "semantic_fraction", "fraction of semantic heads", (0.0, 1.0), MOST_HEADS),
              (axes[1], "gap", "fitted − best uniform l-acc", (0.0, 0.1), GAP))  # fmt: skip
    for ax, key, title, (low, high), cut in panels:
        cells = {}  # (i, j) -> the cells of this square (several when other knobs vary too)
        for name, cell in zip(spec.names, spec.cells, strict=True):
            cells.setdefault((ys.index(getattr(cell, ky)), xs.index(getattr(cell, kx))), []).append(
                stats[name][key]
            )
        grid = np.full((len(ys), len(xs)), np.nan)
        for (i, j), ivs in cells.items():
            grid[i, j] = np.mean([iv.value for iv in ivs])
        high = max(high, float(np.nanmax(grid)))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=low, vmax=high)
        for (i, j), ivs in cells.items():
            text = f"{grid[i, j]:.3f}"
            if len(ivs) == 1:  # one cell: its interval over seeds
                text += f"\n[{ivs[0].low:.3f}, {ivs[0].high:.3f}]"
            dark = (grid[i, j] - low) / (high - low) < 0.6  # viridis is dark below ~0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="w" if dark else "k")  # fmt: skip
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
        ax.set_title(f"{title}: mean [95% interval] over seeds\n(verdict cut-off {cut})",
                     fontsize=9)  # fmt: skip
        bar = fig.colorbar(im, ax=ax)
        bar.ax.axhline(cut, color="r", lw=1.5)
        bar.set_label(f"red line: cut-off {cut}", fontsize=8)
    rest = [k for k in varied[2:]]
    fig.suptitle(
        f"Phase map over {kx} x {ky}" + (f" (averaged over {', '.join(rest)})" if rest else "")
    )
    fig.tight_layout()
    return fig


FIGURES = (
    ("accuracy.png", "Held-out l-acc of the trained model and of three re-weightings of its "
     "heads' EOS contributions; bars are 95% t intervals over seeds.", _accuracy),
    ("classes.png", "Per-model classes through training: the share of models in which every "
     "head, some heads, one head or no head counts alone (Wilson 95% bands).",
     _classes_figure),
    ("training.png", "Held-out l-acc at each snapshot (log-spaced steps), mean and 95% "
     "t interval over seeds.", _training),
    ("roles.png", "Head roles through training (log-spaced snapshots): semantic and counting "
     "heads per model, n_eff of the fitted weights, and the fitted − best-uniform gap.", _roles),
    ("ratios.png", "w_01 and w_02 of the top-weighted head through training, on log scales "
     "(median and interquartile range over seeds).", _ratios),
    ("heads.png", "Every head at the last step: semantics against syntax, and its attention "
     "ratios.", _heads),
    ("weights.png", "Fitted and trained weight shares by rank at the last step.", _weights),
    ("phase.png", "Phase map over the first two knobs the sweep varies.", _phase),
)  # fmt: skip


def _pattern_figures(plt, spec, finals, heads, folder: Path) -> list[tuple]:
    files = []
    for name in spec.names:
        record = finals[name]
        ex = record.get("example")
        if ex is None:
            continue
        seed = record["seeds"][0]
        step = record["cell"]["steps"]
        mine = [r for r in heads if r["name"] == name and r["seed"] == seed and r["step"] == step]
        mine.sort(key=lambda r: r["head"])
        shares = [r["fitted_share"] for r in mine]
        counting = [r["counting"] for r in mine]
        file = f"patterns_{slug(name)}.png"
        plot_patterns(
            np.array(ex["pattern"]), np.array(ex["tokens"]), folder / file,
            title=f"{name}, seed {seed}: attention on an example string "
                  "(* = counting head, α = fitted weight share)",
            weights=shares if None not in shares else None,
            marks=counting,
        )  # fmt: skip
        files.append((file, f"Attention patterns of {name} (seed {seed}) on an example string."))
    return files


# ----------------------------------------------------------------------------- report


def cell_text(text) -> str:
    """A Markdown table cell: '|' escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(cell_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _short_answer(results: dict) -> str:
    lines = ["## Short answer", ""]
    lines += [f"- {s}" for s in results["short_answer"]] or ["- (no cell with several heads)"]
    lines += ["", "Each model is classed from its own heads first (*every* head counts, "
              "*some*, *one* head carries the decision, *none*); a cell's label is the class "
              "that holds in most of its models (the Wilson 95% interval of its share above "
              f"{SHARE_CUT}), then whether equal weights of calibrated heads suffice. Means "
              "over seeds carry 95% t intervals, shares of models Wilson intervals. A verdict "
              "is 'undecided' when an interval straddles (or touches) the cut-off of a rule it "
              "needs; the rules are listed under *Verdicts*, and *Sensitivity* shows each "
              "label under the neighbouring cut-offs. Definitions: docs/method.md "
              "in the repository, and the glossary at the end.", ""]  # fmt: skip
    return "\n".join(lines)


def _what_was_run(results: dict) -> str:
    spec, meta = results["spec"], results["meta"]
    rows = []
    for name, cell in zip(spec["names"], spec["cells"], strict=True):
        t = meta["seconds"].get(name, {})
        rows.append([name, cell["n_heads"], cell["d_model"], cell["d_head"], cell["max_len"],
                     cell["weight_decay"], "on" if cell["bos"] else "off", f"{cell['p2']:.3g}",
                     cell["steps"], cell["lr"],
                     f"{t.get('train', 0):.1f} s / {t.get('analysis', 0):.1f} s"])  # fmt: skip
    seeds = spec["seeds"]
    return "\n".join([
        "## What was run", "",
        f"Command: `{meta['command'] or '(API call)'}` on {meta['device']}"
        + (f" (preset '{spec['preset']}')" if spec["preset"] else "") + f", finished "
        f"{meta['finished']}. {len(seeds)} seeds per cell ({seeds[0]}–{seeds[-1]}), trained "
        f"together as one ensemble; batch {spec['batch_size']} strings per step per model; "
        f"{spec['n_eval']} held-out strings analysed at steps {spec['first_snapshot']}, "
        f"{2 * spec['first_snapshot']}, ... and the last.", "",
        table(["cell", "n_heads", "d_model", "d_head", "max_len", "weight decay", "BOS",
               "share of 2s", "steps", "lr", "train / analysis time"], rows), "",
    ])  # fmt: skip


def _mark(holds) -> str:
    return {True: "yes", False: "no", None: "straddles"}[holds]


def _verdicts(results: dict) -> str:
    rows = []
    for name, v in results["verdicts"].items():
        rules = "; ".join(f"{r['rule']}: {r['shown']} → {_mark(r['holds'])}" for r in v["rules"])
        rows.append([name, v["label"], rules or "–"])
    old = []
    for name, v in (results.get("mean_verdicts") or {}).items():
        rules = "; ".join(f"{r['rule']}: {r['shown']} → {_mark(r['holds'])}" for r in v["rules"])
        old.append([name, v["label"], rules or "–"])
    return "\n".join([
        "## Verdicts: compete or cooperate?", "",
        "**From per-model classes** (the primary result). A class describes a cell when the "
        f"Wilson 95% interval of its share of models lies above {SHARE_CUT}; when no class "
        "does but the models outside *every* are the majority, *some heads count*. Then, over "
        "the models where every head counts (when that class describes the cell) or over all "
        "models: **E** equal weights of calibrated heads lose accuracy (fitted − equal l-acc "
        f"> {GAP}); **M** they lose margin (geometric mean of fitted / equal 5% margin > "
        f"{MARGIN_RATIO}), which still measures when every weighting is right. E or M → *weighted "
        "unequally*; neither → *equal weights suffice*.", "",
        table(["cell", "verdict", "rules (value [95% interval] → holds?)"], rows), "",
        "**From means over seeds** (the earlier rule, kept for comparison: it averages over "
        "models of different classes and measures uniformity on σ-standardised heads by "
        "l-acc alone, which has a ceiling). Rules: **A** most heads carry the count (mean "
        f"share of semantic heads > {MOST_HEADS}); **C** equal weights lose accuracy (fitted "
        f"− best uniform l-acc > {GAP}); **D** one head carries the decision (n_eff of the "
        f"fitted weights < {DOMINANT_N_EFF}). D → *compete*; else A and C → *every head "
        "counts, weighted unequally*; A alone → *a pseudo-ensemble with equal weights*; C "
        "alone → *some heads count, weighted unequally*; neither → *some heads count, equal "
        "weights suffice*.", "",
        table(["cell", "verdict", "rules (value [95% interval] → holds?)"], old), "",
    ])  # fmt: skip


def _classes(results: dict, stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        if s["n_heads"] == 1:
            continue
        rows.append([name, s["n_seeds"]] + [s[f"class_{c}"].fmt(pct=True) for c in CLASSES]
                    + [s["semantic_fraction"].fmt(pct=True)])  # fmt: skip
    return "\n".join([
        "## Per-model classes (last step)", "",
        f"Share of models (Wilson 95% interval) whose heads all count (max(AUC, 1 − AUC) ≥ "
        f"{SEMANTIC_AUC}), two or more but not all, exactly one, or none; beside it the mean "
        "share of semantic heads per model, which mixes the classes.", "",
        table(["cell", "models", "every", "some", "one", "none", "semantic heads (mean)"],
              rows), "",
    ])  # fmt: skip


def _references(stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        if s["n_heads"] == 1:
            continue
        rows.append([
            name, s["gap"].fmt(), s["gap_calibrated"].fmt(), s["margin_ratio"].fmt(2),
            s["margin_ratio_calibrated"].fmt(2), s["logloss_ratio"].fmt(),
            s["logloss_ratio_calibrated"].fmt(), s["n_eff_fitted"].fmt(2),
            s["n_eff_fitted_calibrated"].fmt(2), s["n_eff_fitted_raw"].fmt(2),
            s["n_eff_trained"].fmt(2), s["n_eff_trained_calibrated"].fmt(2),
        ])  # fmt: skip
    return "\n".join([
        "## What \"uniform\" means: three references", "",
        "Equal weights on σ-standardised heads (*σ*: a weak head gets the same unit variance "
        "as a perfect one), on calibrated heads (*cal*: each head scaled by its own solo "
        "logistic slope, the natural ensemble of calibrated members; the reference the "
        "verdict uses) and in raw logit units (where the trained model is uniform by "
        "construction, so only n_eff is shown). *gap*: fitted − best equal-weight l-acc; "
        "*margin ratio*: fitted / equal-weight 5% quantile of the signed score over its sd "
        "(geometric mean, t interval on the log scale); "
        "*log-loss ratio*: equal-weight / fitted cross-entropy (median and IQR over seeds; "
        "on separable heads both are set by the fit's L2 penalty, so read the margin there); "
        "*n_eff*: effective number of heads of the fitted weights on z (σ), in calibrated and "
        "in raw units, and of the trained model's own head scales on z and in calibrated "
        "units. Means over seeds with 95% t intervals.", "",
        table(["cell", "gap σ", "gap cal", "margin ratio σ", "margin ratio cal", "log-loss ratio σ",
               "log-loss ratio cal", "n_eff fitted σ", "n_eff fitted cal", "n_eff fitted raw",
               "n_eff trained σ", "n_eff trained cal"], rows), "",
    ])  # fmt: skip


def _sensitivity(results: dict) -> str:
    sens = results.get("sensitivity") or {}
    if not sens:
        return ""
    columns = list(next(iter(sens.values()))["labels"])
    rows = [[name] + [s["labels"][c] if c == "default" or s["labels"][c] !=
                      s["labels"]["default"] else "same" for c in columns]
            + [{"robust": "yes", "firm": "yes, or undecided", "flips": "**flips**"}[
                s["stability"]]] for name, s in sens.items()]  # fmt: skip
    return "\n".join([
        "## Sensitivity: each label under neighbouring cut-offs", "",
        f"One cut-off changed at a time from its default (AUC {SEMANTIC_AUC}, share "
        f"{SHARE_CUT}, gap {100 * GAP:g} points); *same* where the label does not move. *robust*: "
        "*yes* when no neighbour moves it, *yes, or undecided* when a stricter cut-off only "
        "leaves it open, **flips** when a neighbour gives another label: such a label is not "
        "to be quoted without its cut-off.", "",
        table(["cell"] + columns + ["robust"], rows), "",
    ])  # fmt: skip


def _churn(results: dict) -> str:
    churn = results.get("churn") or {}
    rows, limits = [], []
    for name, c in churn.items():
        steps = sorted(c["shares"], key=int)
        if len(steps) < 2:
            continue
        shares = ", ".join(f"{s}: {c['shares'][s]['every'].fmt(pct=True)}" for s in steps[-4:])
        h = c["churn_last_half"]
        rows.append(
            [
                name,
                shares,
                f"{h['left']} left, {h['entered']} entered "
                f"({h['from']}–{h['to']}, {h['snapshots']} snapshots)",
                "–" if h["left_per_10k"] is None else f"{h['left_per_10k']:.0%}",
            ]
        )
        if c.get("limit"):
            lim = c["limit"]
            conds = "; ".join(
                f"{k}: {'yes' if v else 'no'}"
                for k, v in {**lim["limit"], **lim["mixture"]}.items()
            )
            limits.append([name, f"**{lim['outcome']}**", conds])
    if not rows:
        return ""
    out = [
        "## Classes through training: churn",
        "",
        "Share of models in *every* at the last snapshots (Wilson 95%), and the models that "
        "left or entered *every* between consecutive snapshots over the last half of the run "
        "(left per 10,000 steps as a share of the models).",
        "",
        table(["cell", "share in every", "churn (last half)", "left per 10k steps"], rows),
        "",
    ]
    if limits:
        out += [
            "The pre-registered rule of docs/findings.md (*is every head counting the limit?*):",
            "",
            table(["cell", "outcome", "conditions"], limits),
            "",
        ]
    return "\n".join(out)


def _numbers(results: dict, stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        rows.append([name, s["l_acc"].fmt(), s["s_acc"].fmt(), s["fitted_l_acc"].fmt(),
                     s["uniform_l_acc"].fmt(), s["gap"].fmt(), s["n_eff_fitted"].fmt(2),
                     s["semantic_fraction"].fmt(pct=True), s["reversed_fraction"].fmt(pct=True),
                     s["counting_heads"].fmt(2), s["top_w_01"].fmt(), s["top_w_02"].fmt(),
                     s["long_l_acc"].fmt()])  # fmt: skip
    return "\n".join([
        "## The numbers (last step)", "",
        "Means over seeds with 95% t intervals (shares of heads clipped to [0, 1]); w_01 and "
        "w_02 are ratios, so they are given as the median and interquartile range over "
        "seeds (log scale).", "",
        table(["cell", "l-acc", "s-acc", "fitted l-acc", "best uniform l-acc", "gap", "n_eff",
               "semantic heads", "of them reversed", "counting heads / model", "top head w_01",
               "top head w_02", "l-acc on longer strings"], rows), "",
    ])  # fmt: skip


def _l2(results: dict) -> str:
    l2 = results.get("l2") or {}
    verdicts = l2.get("verdicts") or {}
    if not verdicts:
        return ""
    strengths = list(verdicts)
    names = [n for n, v in results["verdicts"].items() if not v["label"].startswith("n/a")
             and any(n in verdicts[k] for k in strengths)]  # fmt: skip

    def cell(entry):
        if entry is None:
            return "–"
        mark = "" if entry["fit_ok"] else " ‡"
        return f"{entry['label']} (fitted l-acc {entry['fitted_l_acc']:.3f}{mark})"

    rows = [[n] + [cell(verdicts[k].get(n)) for k in strengths] for n in names]
    ok = [[verdicts[k][n]["label"] for k in strengths if n in verdicts[k]
           and verdicts[k][n]["fit_ok"]] for n in names]  # fmt: skip
    agree = all(len(set(labels)) <= 1 for labels in ok)
    return "\n".join([
        "## Does the verdict hang on the L2 penalty?", "",
        f"The fitted weights carry an L2 penalty of {l2.get('used')} on the weights (never on "
        "the bias). Below, every cell is refitted at each strength (the best uniform weighting "
        "does not depend on it). ‡ marks a strength at which the penalty costs the fitted "
        f"weighting more than {2 * GAP} l-acc against the trained model: there the gap "
        "measures the penalty, not the heads. Where the fit is not so crippled the verdicts "
        + ("are the same at every strength." if agree else "differ: read those cells with "
           "care."), "",
        table(["cell"] + [f"L2 = {k}" for k in strengths], rows), "",
    ])  # fmt: skip


def _claims(results: dict) -> str:
    rows = [[c["claim"], c["status"], c["rule"], c["evidence"]] for c in results["claims"]]
    return "\n".join([
        "## Against the paper's claims", "",
        "Each claim is tested in every cell with several heads by its rule: *supported* when "
        "every cell's interval clears the cut-off, *not supported* when every cell's interval "
        "lies on the other side, *undecided* when intervals straddle it, and *mixed* with the "
        "count of each when cells differ. A claim that holds in this model by its "
        "construction is labelled so.", "",
        table(["claim", "status", "rule", "evidence per cell (mean [95% interval])"], rows), "",
    ])  # fmt: skip


def _figures(figures: list[tuple]) -> str:
    lines = ["## Figures", ""]
    for file, caption in figures:
        lines += [f"![{cell_text(caption)}](figures/{file})", "", f"*{caption}*", ""]
    return "\n".join(lines)


GLOSSARY = f"""## Glossary

- **l-acc**: share of positions whose EOS decision (EOS logit > 0) is right; **s-acc**: share
  of strings right at every position; **ROC AUC**: threshold-free separation of the classes.
- **c_h**: head h's contribution to the EOS logit (its output through the unembedding); with
  one attention-only layer the EOS logit is exactly the direct path plus Σ_h c_h.
- **semantic head**: max(AUC, 1 − AUC) of c_h alone ≥ {SEMANTIC_AUC}; *reversed* when AUC < 0.5.
- **counting head**: semantic, with w_01 in {list(BALANCED_W01)} and w_02 < {SUPPRESSED_W02}.
- **w_01, w_02**: mean attention on one key of token 1 (resp. 2) over that on one key of
  token 0; 1 = weighed alike, small = suppressed.
- **fitted weights α_h**: logistic regression of the label on the standardised c_h (free bias,
  stated L2 on the weights); **share** = |α_h| / Σ|α|; **n_eff** = (Σ|α|)² / Σα².
- **best uniform weighting**: one shared scale and bias on Σ_h c_h/σ_h, chosen for the highest
  l-acc; **gap** = fitted − best uniform l-acc.
"""


def render(results: dict, stats: dict, figures: list[tuple]) -> str:
    """The report as Markdown."""
    return "\n".join([
        "# Do attention heads compete or cooperate when counting? — minicount sweep", "",
        _short_answer(results), _verdicts(results), _classes(results, stats),
        _references(stats), _sensitivity(results), _churn(results), _l2(results),
        _numbers(results, stats),
        _claims(results),
        _what_was_run(results), _figures(figures), GLOSSARY,
    ])  # fmt: skip


# ----------------------------------------------------------------------------- analyze


def analysis_summary(result: dict) -> str:
    """Plain-text tables of ``python -m minicount analyze``: per model, its metrics and the
    aggregation; per head, semantics, syntax, weights and attention ratios."""
    lines = [
        f"{result['checkpoint']}: {len(result['members'])} model(s), "
        f"{result['n_eval']} held-out strings of up to {result['max_len']} symbols"
    ]
    for m in result["members"]:
        H = m["config"]["n_heads"]
        knobs = {"n_heads": H}
        if not m.get("exact"):
            lines += [
                "",
                f"model {m['member']}: l-acc {m['metrics']['l_acc']:.4f}  s-acc "
                f"{m['metrics']['s_acc']:.4f}  ROC AUC {m['metrics']['roc_auc']:.4f}",
                f"  (no per-head decomposition: {m.get('exact_problem')})",
            ]
            continue
        heads = head_rows(knobs, m["member"], 0, m)
        row = model_row(knobs, m["member"], 0, m, heads)
        lines += [
            "",
            f"model {m['member']}: l-acc {row['l_acc']:.4f}  s-acc {row['s_acc']:.4f}"
            f"  ROC AUC {row['roc_auc']:.4f}  |  fitted weights {_f(row['fitted_l_acc'])}"
            f"  best uniform {_f(row['uniform_l_acc'])}  gap {_f(row['gap'])}"
            f"  n_eff {_f(row['n_eff_fitted'], 2)} of {H}",
        ]
        lines.append(
            "  head  AUC (sign)  semantic  counting  alone l-acc  weight share"
            "   w_01     w_02     BOS"
        )
        for r in heads:
            sign = {1: "+", -1: "-"}.get(r["auc_sign"], " ")
            lines.append(
                f"  {r['head']:>4}  {_f(r['auc_two_sided'])} ({sign})   "
                f"{'yes' if r['semantic'] else 'no':<8}  {'yes' if r['counting'] else 'no':<8}  "
                f"{_f(r['solo_l_acc']):>11}  {_f(r['fitted_share']):>12}  {_g(r['w_01']):>7}  "
                f"{_g(r['w_02']):>7}  {_f(r['bos_weight'])}"
            )
    lines += [
        "",
        "semantic: max(AUC, 1 − AUC) ≥ 0.9 for the head's EOS contribution alone; "
        "counting: also w_01 in [0.8, 1.25] and w_02 < 0.2 (docs/method.md)",
    ]
    return "\n".join(lines)


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _g(x) -> str:
    return "–" if x is None else f"{x:.3g}"
