"""The sweep's figures (PNG): formatting only. Every number comes from rows.py and
verdicts.py; each figure is one small function (FIGURES), plus the attention patterns.

It writes PNG figures into the run folder it is given (atomically, through safeio);
figures are matplotlib Figure objects, pyplot's backend untouched.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..analysis.patterns import plot_patterns
from ..safeio import atomic_write
from ..stats import log_summary, mean_ci
from .classes import CLASSES, aucs_by_model, class_shares
from .rows import (
    BALANCED_W01,
    SEMANTIC_AUC,
    SUPPRESSED_W02,
    trajectories,
)
from .verdicts import GAP, MOST_HEADS


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
    """rows.trajectories, or None when no cell has two snapshots (nothing to draw)."""
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
