"""The study's three metrics for any EOS score, so that every instrument reports alike.

Pure array code: reads its inputs, returns new arrays and dicts.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..data import EOS
from ..metrics import metrics_from_scores

METRICS = ("l_acc", "s_acc", "roc_auc")


def eos_metrics(scores, targets, mask) -> dict:
    """l-acc, s-acc and ROC AUC of EOS scores [B, T] (any device) against targets [B, T, V]."""
    labels = np.asarray(to_numpy(targets))[..., EOS] > 0.5  # [B, T]
    return metrics_from_scores(np.asarray(to_numpy(scores)), labels, np.asarray(to_numpy(mask)))


def metric_change(after: dict, before: dict) -> dict:
    """after - before for each of l_acc, s_acc, roc_auc."""
    return {k: after[k] - before[k] for k in METRICS}
