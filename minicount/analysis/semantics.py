"""Per-head semantics versus syntax (docs/method.md §4).

For each head h:
    semantics  ROC AUC of its EOS contribution c_h alone: does the head separate the classes?
               A head whose c_h is low where EOS is allowed (AUC near 0) separates them as
               well, with the reversed sign: judge the two-sided max(AUC, 1 - AUC) and keep
               the sign apart (``is_semantic``).
    solo       l-acc / s-acc / AUC of the model with every other head zero-ablated:
               does its output also land on the right side of the EOS threshold?
    scaled     the same with head h's output multiplied by n_heads and the others removed,
               as if every head were a copy of it (the "pure ensemble" hypothesis).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import device_of, to_device, to_numpy
from ..data import EOS
from ..metrics import roc_auc
from .ablation import ablated_logits, result_name, scale_hook
from .attribution import eos_contributions, exactness_problem
from .hooks import check_single, run_with_cache
from .scoring import eos_metrics


def _scaled_scores(params, tokens, config, head: int, factor: float):
    """EOS scores [B, T] with only ``head`` kept, its output multiplied by ``factor``."""
    scale = [factor if g == head else 0.0 for g in range(config.n_heads)]
    hooks = {result_name(0): scale_hook(scale)}
    logits, _ = run_with_cache(params, tokens, config, (), hooks=hooks)
    return logits[..., EOS]


def two_sided(auc):
    """(max(AUC, 1 - AUC), +1 if AUC >= 0.5 else -1) of one AUC: how well and in which
    direction a head separates the classes; (None, None) for None and (nan, None) for nan
    (one class absent). The one definition: head_semantics and study.rows.head_rows use it."""
    if auc is None:
        return None, None
    if math.isnan(auc):
        return auc, None
    return max(auc, 1.0 - auc), (1 if auc >= 0.5 else -1)


def head_semantics(params: dict, tokens, targets, mask, config) -> list[dict]:
    """One dict per head: {"head", "auc_alone", "auc_two_sided", "auc_sign", "solo": metrics,
    "scaled": metrics}; auc_alone is the raw AUC of c_h, auc_two_sided = max(AUC, 1 - AUC)
    and auc_sign = +1 if AUC >= 0.5 else -1 (see two_sided).

    tokens [B, T], targets [B, T, V], mask [B, T]. Heads are those of layer 0. With an
    exact decomposition (one layer, attention-only) the solo and scaled scores come from the
    head contributions (offset + c_h, offset + n_heads * c_h); otherwise from hooked forward
    passes, and auc_alone is None because c_h is not defined.
    """
    check_single(params)
    H = config.n_heads
    tokens = to_device(tokens, device_of(params["embed.W_E"]))
    labels = np.asarray(to_numpy(targets))[..., EOS] > 0.5  # [B, T]
    real = np.asarray(to_numpy(mask), dtype=bool)  # [B, T]
    exact = exactness_problem(config) is None
    if exact:
        c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
    rows = []
    for h in range(H):
        if exact:
            auc_alone = roc_auc(to_numpy(c[h])[real], labels[real])
            solo, scaled = offset + c[h], offset + H * c[h]  # [B, T]
        else:
            auc_alone = None
            solo = ablated_logits(params, tokens, config, [g == h for g in range(H)])[..., EOS]
            scaled = _scaled_scores(params, tokens, config, h, float(H))
        auc_two_sided, auc_sign = two_sided(auc_alone)
        rows.append(
            {
                "head": h,
                "auc_alone": auc_alone,
                "auc_two_sided": auc_two_sided,
                "auc_sign": auc_sign,
                "solo": eos_metrics(solo, targets, mask),
                "scaled": eos_metrics(scaled, targets, mask),
            }
        )
    return rows
