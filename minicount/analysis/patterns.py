"""Attention patterns: who attends to whom, per layer and head, and heat maps of them.

It builds matplotlib Figure objects directly and never switches pyplot's global backend.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, to_numpy
from ..data import VOCAB
from ..names import act_name
from .hooks import check_single, run_with_cache


def attention_patterns(params: dict, tokens, config):
    """Attention weights of every layer and head: [n_layers, B, n_heads, T, T].

    pattern[l, b, h, t, j] is the weight that query position t gives key position j
    (rows sum to 1 over j <= t; zero above the diagonal). Recorded through the forward
    pass's ``blocks.{l}.attn.hook_pattern`` hooks, for any architecture.
    """
    check_single(params)
    names = [act_name("pattern", l) for l in range(config.n_layers)]
    _, cache = run_with_cache(params, tokens, config, names)
    xp = array_module(cache[names[0]])
    return xp.stack([cache[n] for n in names])  # [L, B, H, T, T]


def token_labels(tokens) -> list[str]:
    """Axis labels for one sequence of token ids [T] (host array), PAD dropped."""
    return [VOCAB[int(i)] for i in np.asarray(to_numpy(tokens)) if VOCAB[int(i)] != "PAD"]


def plot_patterns(pattern, tokens, path, *, title: str = "", weights=None, marks=None) -> None:
    """Heat maps of one sequence's attention, one panel per head, tokens on both axes.

    pattern [n_heads, T, T] (one layer, one sequence); tokens [T]; ``weights`` (optional,
    [n_heads]) are printed in the panel titles, e.g. each head's fitted aggregation weight;
    ``marks`` (optional, [n_heads] bools) put a * before the heads to point out (e.g. the
    counting heads). Writes a PNG to ``path`` (a path or a binary file); matplotlib's global
    backend is left alone (the figure is drawn off-screen).
    """
    from matplotlib.figure import Figure

    pattern = np.asarray(to_numpy(pattern))
    labels = token_labels(tokens)
    n = len(labels)
    H = pattern.shape[0]
    cols = min(H, 4)
    rows = -(-H // cols)
    fig = Figure(figsize=(2.7 * cols + 0.8, 2.8 * rows + 0.4), layout="constrained")
    axes = fig.subplots(
        rows,
        cols,
        squeeze=False,
    )
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.set_axis_off()
            continue
        im = ax.imshow(pattern[h, :n, :n], vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(n), labels, fontsize=5, rotation=90)
        ax.set_yticks(range(n), labels, fontsize=5)
        mark = "* " if marks is not None and marks[h] else ""
        head_title = f"{mark}head {h}" + (f"  α={weights[h]:.2f}" if weights is not None else "")
        ax.set_title(head_title, fontsize=8)
        ax.set_xlabel("key", fontsize=7)
        if h % cols == 0:
            ax.set_ylabel("query", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, format="png")
