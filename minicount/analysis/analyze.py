"""One call that runs every instrument on one model and returns plain JSON-ready data.

It reads its inputs and returns new values; no files, no global state.
"""

from __future__ import annotations

import numpy as np

from ..backend import device_of, to_device, to_numpy
from ..data import EOS
from ..metrics import metrics_from_logits
from ..model import forward
from ..record import jsonable
from .ablation import ablation_study
from .aggregation import aggregation_from_contributions
from .attention_stats import attention_stats
from .attribution import eos_contributions, exactness_problem
from .hooks import check_single
from .interventions import intervention_study
from .linear import linear_fit_from_contributions
from .semantics import head_semantics


def contribution_summary(c, targets, mask) -> dict:
    """Per head, from c [H, B, T] over the real positions: the mean EOS contribution where EOS
    is allowed (mean_pos) and where not (mean_neg), its std over all of them (std) and within
    each class (sd_pos, sd_neg)."""
    c = np.asarray(to_numpy(c), dtype=np.float64)  # [H, B, T]
    real = np.asarray(to_numpy(mask), dtype=bool)
    y = np.asarray(to_numpy(targets))[..., EOS] > 0.5
    return {
        "mean_pos": c[:, real & y].mean(axis=1),
        "mean_neg": c[:, real & ~y].mean(axis=1),
        "std": c[:, real].std(axis=1),
        "sd_pos": c[:, real & y].std(axis=1),
        "sd_neg": c[:, real & ~y].std(axis=1),
    }


def analyze_model(
    params: dict,
    tokens,
    targets,
    mask,
    config,
    *,
    subsets: bool = True,
    interventions: bool = True,
    l2: float = 1e-4,
) -> dict:
    """Every instrument on one model (no model axis) over a held-out batch.

    tokens [B, T], targets [B, T, V], mask [B, T] (host or device). Returns a JSON-ready dict:
        config, metrics (l_acc, s_acc, roc_auc, next_set_acc, loss), exact (bool) and
        exact_problem, attention (w_01, w_02, BOS weight), ablation (zero / mean: only,
        leave_out, every subset), interventions, and, when the direct decomposition is exact,
        contributions, semantics, aggregation and linear (else those keys hold None).
    """
    check_single(params)
    device = device_of(params["embed.W_E"])
    tokens = to_device(np.asarray(to_numpy(tokens)), device)
    logits = forward(params, tokens, config, attention="fast")  # [B, T, V] (see hooks.py)
    problem = exactness_problem(config)
    out = {
        "config": config.to_dict(),
        "metrics": metrics_from_logits(logits, to_device(targets, device).astype(logits.dtype),
                                       to_device(mask, device)),
        "exact": problem is None,
        "exact_problem": problem,
        "attention": attention_stats(params, tokens, mask, config),
        "ablation": ablation_study(params, tokens, targets, mask, config, subsets=subsets),
        "semantics": head_semantics(params, tokens, targets, mask, config),
        "contributions": None, "aggregation": None, "linear": None,
    }  # fmt: skip
    out["ablation"].pop("means")
    if problem is None:
        c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
        out["contributions"] = contribution_summary(c, targets, mask)
        out["aggregation"] = aggregation_from_contributions(c, offset, targets, mask, l2=l2)
        out["linear"] = linear_fit_from_contributions(c, offset, targets, mask, l2=l2)
    if interventions:
        out["interventions"] = intervention_study(params, tokens, targets, mask, config)
    return jsonable(out)
