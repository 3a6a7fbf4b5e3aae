"""Interventions (docs/method.md §4): re-run the model with attention or value vectors
edited by hooks.

Attention edits act on ``blocks.{l}.attn.hook_attn_scores`` [B, H, T, T] of one head:
    force w_ab = w   shift the scores of every key of token b, per query, so that the mean
                     weight per b-key is w times the mean weight per a-key
                     (force_w01=1: 1s balanced against 0s)
    force w_ab = 0   remove the keys of token b (force_w02=0: 2s ignored), unless a query sees
                     nothing else
Value edits act on ``blocks.{l}.attn.hook_v`` [B, H, T, d_head]:
    swap_values i,j  heads i and j trade value vectors (each keeps its pattern and W_O)
    roll_values      head h takes the value vectors of head h+1 (mod n_heads)
    mean_values      every head's value vectors replaced by their mean over heads
Each run reports l-acc, s-acc, ROC AUC and their change from the unedited model.
"""

from __future__ import annotations

import math
from itertools import combinations

from ..backend import array_module, device_of, to_device
from ..data import EOS, ONE, TWO, ZERO
from ..fast.attention import shift_free
from ..names import act_name
from .hooks import check_single, run_with_cache
from .scoring import eos_metrics, metric_change

SWAP_ALL_PAIRS_UP_TO = 4  # heads; above this only roll_values and mean_values are run


def _log_mean_exp(scores, keys):
    """log of the mean of exp(score) over the keys where ``keys`` is True:
    scores [..., T, T], keys broadcastable to them -> [..., T].

    0 where a query has no such key (callers leave those queries alone)."""
    xp = array_module(scores)
    count = keys.sum(axis=-1)  # [..., T]
    if shift_free(scores):  # exp cannot overflow
        total = (xp.exp(scores) * keys).sum(axis=-1)  # [..., T]
        return xp.log(xp.where(count > 0, total / xp.maximum(count, 1), 1.0))  # [..., T]
    masked = xp.where(keys, scores, -xp.inf)  # [..., T, T]
    top = masked.max(axis=-1, keepdims=True)  # [..., T, 1]
    top = xp.where(xp.isfinite(top), top, 0.0)
    total = xp.exp(masked - top).sum(axis=-1)  # [..., T]
    mean = xp.where(count > 0, total / xp.maximum(count, 1), 1.0)  # [..., T]
    return xp.log(mean) + xp.where(count > 0, top[..., 0], 0.0)


def removed_keys(tokens, b: int, T: int):
    """[B, 1, T, T]: the keys that forcing w_ab = 0 removes, those of token b, for every
    query that sees another key. tokens [B, T]."""
    xp = array_module(tokens)
    visible = xp.tril(xp.ones((T, T), dtype=bool))  # [T, T] key j <= query t
    is_b = (visible & (tokens == b)[:, None, :])[:, None]  # [B, 1, T, T]
    others = (visible & ~is_b).any(axis=-1, keepdims=True)  # [B, 1, T, 1]
    return is_b & others


def force_weight(scores, tokens, a: int, b: int, w: float):
    """Scores [..., B, H, T, T] with w_ab set to ``w`` in every head at once (see
    force_weight_hook); tokens [B, T] on the scores' device. Each head's edit reads only
    that head's scores, so this equals editing the heads one by one."""
    xp = array_module(scores)
    T = scores.shape[-1]
    visible = xp.tril(xp.ones((T, T), dtype=bool))  # [T, T] key j <= query t
    is_a = (visible & (tokens == a)[:, None, :])[:, None]  # [B, 1, T, T]
    is_b = (visible & (tokens == b)[:, None, :])[:, None]  # [B, 1, T, T]
    if w == 0:
        return xp.where(removed_keys(tokens, b, T), -xp.inf, scores)  # [..., B, H, T, T]
    shift = _log_mean_exp(scores, is_a) - _log_mean_exp(scores, is_b) + math.log(w)  # [.., T]
    shift = xp.where(is_a.any(-1) & is_b.any(-1), shift, 0.0)  # [..., B, H, T]
    return xp.where(is_b, scores + shift[..., None], scores)  # [..., B, H, T, T]


def force_weight_hook(tokens, head: int, a: int, b: int, w: float):
    """A hook for hook_attn_scores [B, H, T, T] that sets head ``head``'s w_ab to ``w``.

    tokens [B, T] are the sequences of the run (the hook needs the key tokens).
    w > 0 shifts the b-keys' scores by log(mean_a exp) − log(mean_b exp) + log w per query
    (only where the query sees keys of both tokens); w = 0 removes the b-keys for every
    query that sees another key.
    """
    if w < 0:
        raise ValueError(f"a relative attention weight must be >= 0, got {w}")

    def hook(scores):
        tok = to_device(tokens, device_of(scores))
        out = scores.copy()
        out[:, head] = force_weight(scores[:, head : head + 1], tok, a, b, w)[:, 0]  # [B, T, T]
        return out

    return hook


def permute_values_hook(order):
    """A hook for hook_v [B, H, T, d_head]: head h gets the value vectors of head order[h]."""

    def hook(v):
        return v[:, list(order)]

    return hook


def mean_values_hook():
    """A hook for hook_v [B, H, T, d_head]: every head gets the mean value vector over heads."""

    def hook(v):
        xp = array_module(v)
        return xp.broadcast_to(v.mean(axis=1, keepdims=True), v.shape).copy()  # [B, H, T, d_head]

    return hook


def intervention_list(tokens, n_heads: int, *, layer: int = 0) -> list[tuple[str, list, dict]]:
    """(name, heads involved, hooks) for every intervention of the study."""
    scores, values = act_name("attn_scores", layer), act_name("v", layer)
    every = list(range(n_heads))
    runs = []
    for h in range(n_heads):
        runs.append(("force_w01=1", [h], {scores: force_weight_hook(tokens, h, ZERO, ONE, 1.0)}))
        runs.append(("force_w02=0", [h], {scores: force_weight_hook(tokens, h, ZERO, TWO, 0.0)}))
    runs.append(("all_heads_ideal", every, {scores: _all_ideal_hook(tokens, n_heads)}))
    if n_heads > 1:
        runs.append(("mean_values", every, {values: mean_values_hook()}))
        roll = [(h + 1) % n_heads for h in range(n_heads)]
        runs.append(("roll_values", every, {values: permute_values_hook(roll)}))
    if 2 < n_heads <= SWAP_ALL_PAIRS_UP_TO:
        for i, j in combinations(range(n_heads), 2):
            order = list(range(n_heads))
            order[i], order[j] = j, i
            runs.append(("swap_values", [i, j], {values: permute_values_hook(order)}))
    return runs


def _all_ideal_hook(tokens, n_heads: int):
    """Every head at once: w_01 forced to 1 and w_02 forced to 0."""
    hooks = [force_weight_hook(tokens, h, ZERO, ONE, 1.0) for h in range(n_heads)]
    hooks += [force_weight_hook(tokens, h, ZERO, TWO, 0.0) for h in range(n_heads)]

    def hook(scores):
        for f in hooks:
            scores = f(scores)
        return scores

    return hook


def run_intervention(params: dict, tokens, config, hooks: dict):
    """Logits [B, T, V] of the model with the given editing hooks."""
    check_single(params)
    logits, _ = run_with_cache(params, tokens, config, (), hooks=hooks)
    return logits


def intervention_study(
    params: dict, tokens, targets, mask, config, *, layer: int = 0
) -> list[dict]:
    """Every intervention of ``intervention_list`` with its metrics and their change.

    tokens [B, T], targets [B, T, V], mask [B, T]. Returns a list of
    {"name", "heads", l_acc, s_acc, roc_auc, "delta": {l_acc, s_acc, roc_auc}}; the first
    entry, "none", is the unedited model.
    """
    check_single(params)
    tokens = to_device(tokens, device_of(params["embed.W_E"]))
    base = eos_metrics(run_intervention(params, tokens, config, {})[..., EOS], targets, mask)
    rows = [{"name": "none", "heads": [], **base, "delta": metric_change(base, base)}]
    for name, heads, hooks in intervention_list(tokens, config.n_heads, layer=layer):
        m = eos_metrics(run_intervention(params, tokens, config, hooks)[..., EOS], targets, mask)
        rows.append({"name": name, "heads": heads, **m, "delta": metric_change(m, base)})
    return rows
