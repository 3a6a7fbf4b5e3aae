"""Linear-combination fit (docs/method.md §4): how well a linear read-out of the head contributions
alone (without the direct path) predicts the model's EOS score, its decisions and the labels.

    score     least squares  s ≈ Σ_h β_h c_h + β_0            -> R², β
    decision  logistic fit of [s > 0] on the standardised c_h  -> agreement with the model
    labels    logistic fit of y on the standardised c_h        -> l-acc, s-acc, ROC AUC

Every intercept is free: the logistic fits penalise their weights only (L2, see logistic).

Pure array code: reads its inputs, returns new arrays and dicts.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of, to_device, to_numpy
from ..data import EOS
from .aggregation import standardise
from .attribution import eos_contributions
from .hooks import check_single
from .logistic import L2, fit_logistic_batched
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


def linear_fit_batched(c, offset, targets, mask, *, l2: float = L2) -> list[dict]:
    """The three fits above for M models: c [M, H, B, T], offset [M, B, T] (score = offset +
    Σ c_h), targets [B, T, V], mask [B, T]. The 2M logistic fits run as one batch; entry i
    equals linear_fit_from_contributions(c[i], offset[i], ...) to rounding.

    Returns one dict per model: {"score_r2", "score_coef" [H], "score_intercept",
    "decision_agreement" (fraction of real positions where the fitted decision equals the
    model's), "labels" (metrics of the label fit), "label_weights" [H], "label_bias"}.
    """
    xp = array_module(c)
    device = device_of(c)
    c = xp.asarray(c, dtype=xp.float64)
    offset = xp.asarray(offset, dtype=xp.float64)
    M = c.shape[0]
    m = to_device(mask, device).astype(bool)  # [B, T]
    labels = to_device(np.asarray(to_numpy(targets))[..., EOS] > 0.5, device)  # [B, T]
    score = offset + c.sum(axis=1)  # [M, B, T]
    C = c[..., m].transpose(0, 2, 1)  # [M, N, H]
    z, _ = standardise(c, m)  # [M, H, B, T]
    Z = z[..., m].transpose(0, 2, 1)  # [M, N, H]
    decision = score[:, m] > 0  # [M, N]
    y = xp.broadcast_to(labels[m], decision.shape)  # [M, N]
    # problems 0..M-1 fit the model's decisions, M..2M-1 the labels
    fit = fit_logistic_batched(
        xp.concatenate([Z, Z]), xp.concatenate([decision, y]).astype(xp.float64), l2=l2
    )
    w, b = fit["w"].reshape(2, M, -1), fit["b"].reshape(2, M)  # [2, M, H], [2, M]
    fitted = b[..., None, None] + xp.einsum("kmh,mhbt->kmbt", w, z)  # [2, M, B, T]
    agreement = ((fitted[0] > 0) == (score > 0))[:, m].mean(axis=1)  # [M]
    out = []
    for i in range(M):
        beta, beta0, r2 = least_squares(C[i], score[i][m])
        out.append({
            "score_r2": r2,
            "score_coef": np.asarray(to_numpy(beta)).tolist(),
            "score_intercept": beta0,
            "decision_agreement": float(agreement[i]),
            "labels": eos_metrics(fitted[1, i], targets, mask),
            "label_weights": np.asarray(to_numpy(w[1, i])).tolist(),
            "label_bias": float(b[1, i]),
        })  # fmt: skip
    return out


def linear_fit_from_contributions(c, offset, targets, mask, *, l2: float = L2) -> dict:
    """The three fits above from c [H, B, T] and offset [B, T] (see linear_fit_batched)."""
    return linear_fit_batched(c[None], offset[None], targets, mask, l2=l2)[0]


def linear_fit(params: dict, tokens, targets, mask, config, *, l2: float = L2) -> dict:
    """Linear read-outs of the head contributions; see the module doc. tokens [B, T] on the
    parameters' device; one-layer attention-only models only (ValueError otherwise)."""
    check_single(params)
    c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
    return linear_fit_from_contributions(c, offset, targets, mask, l2=l2)
