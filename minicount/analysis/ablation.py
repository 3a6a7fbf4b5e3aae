"""Head ablation (docs/method.md §4): replace heads' outputs by zero or by their mean,
through a hook.

The forward pass is run with a hook on ``blocks.{layer}.attn.hook_result`` [B, H, T, d_model]
(each head's output before the sum over heads) that swaps the ablated heads' outputs for

    zero ablation:  0
    mean ablation:  the head's mean output over the real positions of the evaluation set

The parameters are never touched. Variants: keep only one head, leave one head out, and
every subset of heads when n_heads <= 8, each with l-acc, s-acc and ROC AUC.
"""

from __future__ import annotations

from itertools import combinations

from ..backend import array_module, device_of, to_device
from ..data import EOS
from ..names import act_name
from .attribution import eos_contributions, exactness_problem
from .hooks import check_single, run_with_cache
from .scoring import eos_metrics

MODES = ("zero", "mean")
MAX_SUBSET_HEADS = 8


def result_name(layer: int = 0) -> str:
    return act_name("result", layer)


def result_means(params: dict, tokens, mask, config, *, layer: int = 0):
    """Each head's mean output over the real positions: float64 [n_heads, d_model].

    tokens [B, T], mask [B, T] (True at real positions). Summed in float64, so that the
    mean does not depend on the order of the sum (analyze_ensemble sums in chunks).
    """
    check_single(params)
    _, cache = run_with_cache(params, tokens, config, [result_name(layer)])
    result = cache[result_name(layer)]  # [B, H, T, d_model]
    xp = array_module(result)
    m = to_device(mask, device_of(result)).astype(xp.float64)[:, None, :, None]  # [B, 1, T, 1]
    return (result.astype(xp.float64) * m).sum(axis=(0, 2)) / m.sum(axis=(0, 2))  # [H, d_model]


def ablation_hook(keep, fill=None):
    """A hook for hook_result [B, H, T, d_model] that keeps the heads where keep[h] is True
    and replaces the others by ``fill`` [H, d_model] (None = zero ablation)."""

    def hook(result):
        xp = array_module(result)
        kept = xp.asarray(keep, dtype=bool)[:, None, None]  # [H, 1, 1]
        if fill is None:
            return xp.where(kept, result, 0.0)  # [B, H, T, d_model]
        replacement = to_device(fill, device_of(result))[:, None, :]  # [H, 1, d_model]
        return xp.where(kept, result, replacement)  # [B, H, T, d_model]

    return hook


def scale_hook(scale):
    """A hook for hook_result [B, H, T, d_model] that multiplies head h's output by scale[h]."""

    def hook(result):
        xp = array_module(result)
        return result * xp.asarray(scale, dtype=result.dtype)[:, None, None]  # [B, H, T, d]

    return hook


def ablated_logits(params: dict, tokens, config, keep, *, fill=None, layer: int = 0):
    """Logits [B, T, V] with the heads where keep[h] is False ablated in ``layer``.

    fill: None for zero ablation, or [n_heads, d_model] (e.g. ``result_means``) for mean
    ablation.
    """
    check_single(params)
    if len(keep) != config.n_heads:
        raise ValueError(f"keep needs one entry per head ({config.n_heads}), got {len(keep)}")
    hooks = {result_name(layer): ablation_hook(keep, fill)}
    logits, _ = run_with_cache(params, tokens, config, (), hooks=hooks)
    return logits


def head_sets(n_heads: int, *, subsets: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, kept heads) for keep-only-one, leave-one-out and (n_heads <= 8) every subset."""
    heads = range(n_heads)
    sets = [("only", (h,)) for h in heads]
    sets += [("leave_out", tuple(g for g in heads if g != h)) for h in heads]
    if subsets and n_heads <= MAX_SUBSET_HEADS:
        sets += [("subset", kept) for r in range(n_heads + 1) for kept in combinations(heads, r)]
    return sets


def _subset_scorer(params, tokens, config, fill, layer):
    """A function kept-heads -> EOS scores [B, T].

    For one-layer attention-only models the logits are linear in the head outputs, so one
    forward pass gives every subset: score = offset + Σ_kept c_h + Σ_ablated fill_h @ W_U[:, EOS]
    (the same numbers the hooked forward pass gives, up to rounding). Otherwise each subset
    runs the hooked forward pass.
    """
    H = config.n_heads
    if exactness_problem(config) is None:
        c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
        xp = array_module(c)
        fill_eos = xp.zeros(H, dtype=c.dtype)  # [H]
        if fill is not None:  # the scores stay in the model's dtype
            fill_eos = (fill @ params["unembed.W_U"][:, EOS]).astype(c.dtype)  # [H]

        def score(kept):
            keep = xp.asarray([h in kept for h in range(H)])  # [H]
            per_head = xp.where(keep[:, None, None], c, fill_eos[:, None, None])  # [H, B, T]
            return offset + per_head.sum(axis=0)  # [B, T]

        return score

    def score_by_forward(kept):
        keep = [h in kept for h in range(H)]
        return ablated_logits(params, tokens, config, keep, fill=fill, layer=layer)[..., EOS]

    return score_by_forward


def ablation_study(
    params: dict,
    tokens,
    targets,
    mask,
    config,
    *,
    layer: int = 0,
    modes=MODES,
    subsets: bool = True,
) -> dict:
    """Metrics of the model with heads ablated, for every variant and mode.

    tokens [B, T], targets [B, T, V], mask [B, T]. Returns
        {"means": [H][d_model] (the mean-ablation values),
         mode: [{"kind": "only" | "leave_out" | "subset", "kept": [heads], l_acc, s_acc,
                 roc_auc}, ...] for each mode in ``modes``}
    """
    check_single(params)
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown ablation mode {mode!r}: choose from {MODES}")
    device = device_of(params["embed.W_E"])
    tokens_d = to_device(tokens, device)
    means = result_means(params, tokens_d, to_device(mask, device), config, layer=layer)
    out = {"means": means}
    for mode in modes:
        fill = None if mode == "zero" else means
        score = _subset_scorer(params, tokens_d, config, fill, layer)
        rows = []
        for kind, kept in head_sets(config.n_heads, subsets=subsets):
            row = {"kind": kind, "kept": list(kept)}
            row.update(eos_metrics(score(kept), targets, mask))
            rows.append(row)
        out[mode] = rows
    return out
