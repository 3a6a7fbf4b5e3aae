"""The study's metrics (SPEC §3), computed from the EOS score s_t = logits[t, EOS].

- l-acc: fraction of real positions where the decision s_t > 0 equals y_t
- s-acc: fraction of sequences whose decision is right at every position
- ROC AUC: threshold-free separability of s_t against y_t (ties count one half)
- next-set accuracy: fraction of positions where all V columns are right; and the loss
"""

from __future__ import annotations

import numpy as np

from .backend import array_module, to_numpy
from .data import EOS
from .layers import bce_with_logits_forward


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counted one half (the Mann-Whitney U statistic over average ranks). Host arrays.
    Returns nan when one class is absent."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank (1-based) of each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def metrics_from_logits(logits, targets, mask) -> dict:
    """Metrics for one model from logits [B, T, V] (any backend), targets [B, T, V], mask [B, T]."""
    xp = array_module(logits)
    loss, _ = bce_with_logits_forward(
        logits, xp.asarray(targets, dtype=logits.dtype), xp.asarray(mask)
    )
    logits, targets, mask = (
        to_numpy(logits),
        np.asarray(to_numpy(targets)),
        np.asarray(to_numpy(mask)),
    )
    return metrics_from_scores(
        logits[..., EOS], targets[..., EOS], mask, logits=logits, targets=targets, loss=float(loss)
    )


def metrics_from_scores(scores, labels, mask, *, logits=None, targets=None, loss=None) -> dict:
    """l-acc, s-acc and ROC AUC from EOS scores [B, T] and labels [B, T] over the real positions."""
    scores, labels, mask = (
        np.asarray(scores),
        np.asarray(labels).astype(bool),
        np.asarray(mask, bool),
    )
    right = (scores > 0) == labels  # [B, T]
    out = {
        "l_acc": float(right[mask].mean()),
        "s_acc": float((right | ~mask).all(axis=-1).mean()),
        "roc_auc": roc_auc(scores[mask], labels[mask]),
    }
    if logits is not None:
        all_right = ((logits > 0) == (targets > 0.5)).all(axis=-1)
        out["next_set_acc"] = float(all_right[mask].mean())
    if loss is not None:
        out["loss"] = loss
    return out


def evaluate(params: dict, tokens, targets, mask, config, *, chunk: int = 1024) -> dict:
    """Metrics of a model on a batch (run in chunks of ``chunk`` sequences).

    Keys: l_acc, s_acc, roc_auc, next_set_acc, loss. For an ensemble each value is a NumPy
    array [M] (one entry per member); for a single model a float. The batch may be on the
    host; it is moved to the parameters' device.
    """
    from .backend import device_of, to_device
    from .model import check_batch, forward, n_models

    check_batch(*(np.asarray(to_numpy(a)) for a in (tokens, targets, mask)), params, config)
    device = device_of(params["embed.W_E"])
    M = n_models(params, config)
    pieces = []
    for i in range(0, len(tokens), chunk):
        tok = to_device(np.asarray(to_numpy(tokens[i : i + chunk])), device)
        pieces.append(to_numpy(forward(params, tok, config)))
    logits = np.concatenate(pieces, axis=-3)  # [..., B, T, V]
    targets, mask = np.asarray(to_numpy(targets)), np.asarray(to_numpy(mask))
    if M is None:
        return metrics_from_logits(logits, targets, mask)
    per = [metrics_from_logits(logits[i], targets, mask) for i in range(M)]
    return {k: np.array([p[k] for p in per]) for k in per[0]}
