"""Linear-combination fit (SPEC §4): how well a linear read-out of the head contributions
alone (without the direct path) predicts the model's EOS score, its decisions and the labels.

    score     least squares  s ≈ Σ_h β_h c_h + β_0            -> R², β
    decision  logistic fit of [s > 0] on the standardised c_h  -> agreement with the model
    labels    logistic fit of y on the standardised c_h        -> l-acc, s-acc, ROC AUC
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of, to_device, to_numpy
from ..data import EOS
from .aggregation import fit_logistic, standardise
from .attribution import eos_contributions
from .hooks import check_single
from .scoring import eos_metrics


def least_squares(X, y) -> tuple:
    """(β [k], β_0, R²) of the least-squares fit y ≈ X @ β + β_0. X [N, k], y [N]."""
    xp = array_module(X)
    A = xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)  # [N, k+1]
    coef = xp.linalg.lstsq(A, y, rcond=None)[0]  # [k+1]
    residual = y - A @ coef  # [N]
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / total) if float(total) > 0 else float("nan")
    return coef[:-1], float(coef[-1]), r2


def linear_fit_from_contributions(c, offset, targets, mask, *, l2: float = 1e-4) -> dict:
    """The three fits above from c [H, B, T] and offset [B, T] (score = offset + Σ c_h)."""
    xp = array_module(c)
    device = device_of(c)
    m = to_device(mask, device).astype(bool)  # [B, T]
    labels = to_device(np.asarray(to_numpy(targets))[..., EOS] > 0.5, device)  # [B, T]
    score = offset + c.sum(axis=0)  # [B, T]
    C = c[:, m].T.astype(xp.float64)  # [N, H]
    beta, beta0, r2 = least_squares(C, score[m].astype(xp.float64))
    z, _ = standardise(c, m)  # [H, B, T]
    Z = z[:, m].T  # [N, H]
    decision = fit_logistic(Z, score[m] > 0, l2=l2)
    agree_score = decision["b"] + xp.tensordot(decision["w"].astype(z.dtype), z, axes=1)  # [B, T]
    agreement = float(((agree_score > 0) == (score > 0))[m].mean())
    label_fit = fit_logistic(Z, labels[m], l2=l2)
    label_score = label_fit["b"] + xp.tensordot(label_fit["w"].astype(z.dtype), z, axes=1)  # [B, T]
    return {
        "score_r2": r2,
        "score_coef": np.asarray(to_numpy(beta)).tolist(),
        "score_intercept": beta0,
        "decision_agreement": agreement,
        "labels": eos_metrics(label_score, targets, mask),
        "label_weights": np.asarray(to_numpy(label_fit["w"])).tolist(),
    }


def linear_fit(params: dict, tokens, targets, mask, config, *, l2: float = 1e-4) -> dict:
    """Linear read-outs of the head contributions; see the module doc. tokens [B, T] on the
    parameters' device; one-layer attention-only models only (ValueError otherwise)."""
    check_single(params)
    c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
    return linear_fit_from_contributions(c, offset, targets, mask, l2=l2)
