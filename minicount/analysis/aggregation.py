"""How the output layer aggregates the heads (SPEC §4), and the logistic regression behind it.

Each head's EOS contribution c_h is standardised over the evaluation positions,
z_h = c_h / σ_h, so that the trained model reads

    s = offset + Σ_h σ_h z_h          (offset = direct path + b_U[EOS])

i.e. it weights the standardised heads by α_h = σ_h. Three aggregations are compared:

    trained   the model itself (α_h = σ_h, no extra bias)
    fitted    logistic regression of y on z (offset fixed, weights α_h and a bias free)
    uniform   logistic regression of y on Σ_h z_h (one shared weight and a bias)

Non-uniform aggregation shows as uniform < fitted ≈ trained.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of, to_device, to_numpy
from ..data import EOS
from .attribution import eos_contributions
from .hooks import check_single
from .scoring import eos_metrics


def _penalised_loss(A, y, offset, theta, l2):
    """mean BCE of y against offset + A @ theta, plus (l2 / 2) ||theta||²; a float."""
    xp = array_module(A)
    z = offset + A @ theta  # [N]
    return float((xp.logaddexp(0.0, z) - y * z).mean() + 0.5 * l2 * (theta @ theta))


def fit_logistic(
    X, y, *, offset=None, l2: float = 1e-4, max_iter: int = 100, tol: float = 1e-9
) -> dict:
    """L2-regularised logistic regression by damped Newton steps.

    X [N, k] features, y [N] labels in {0, 1}, offset [N] a fixed term of the logit
    (coefficient 1). Minimises mean BCE(y, offset + X @ w + b) + (l2 / 2)(|w|² + b²).

    Plain Newton steps overflow and diverge on separable data (the unregularised optimum is
    at infinity and the Hessian vanishes). Here the penalty l2 > 0 makes the optimum finite
    and the Hessian positive definite, and every step is damped by backtracking until the
    penalised loss goes down, so the fit is robust on separable and non-separable data alike.
    The loss uses logaddexp, which never overflows. l2 = 0 is allowed for data that are
    known not to be separable.

    Returns {"w": [k], "b": float, "loss": float, "iterations": int, "converged": bool},
    arrays on the module of X. Runs on NumPy or CuPy, in float64.
    """
    xp = array_module(X)
    X = xp.asarray(X, dtype=xp.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be [N, k], got shape {tuple(X.shape)}")
    N, k = X.shape
    y = xp.asarray(y, dtype=xp.float64).reshape(-1)  # [N]
    if y.shape[0] != N or N == 0:
        raise ValueError(f"y must have one label per row of X ({N}), got {y.shape[0]}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    offset = xp.zeros(N) if offset is None else xp.asarray(offset, dtype=xp.float64).reshape(-1)
    A = xp.concatenate([X, xp.ones((N, 1))], axis=1)  # [N, k+1], the last column fits b
    theta = xp.zeros(k + 1)  # [k+1]
    loss = _penalised_loss(A, y, offset, theta, l2)
    converged, iterations = False, 0
    while iterations < max_iter:
        iterations += 1
        p = 0.5 * (1.0 + xp.tanh(0.5 * (offset + A @ theta)))  # [N] sigmoid, never overflows
        grad = A.T @ (p - y) / N + l2 * theta  # [k+1]
        hess = (A.T * (p * (1 - p))) @ A / N + (l2 + 1e-12) * xp.eye(k + 1)  # [k+1, k+1]
        step = xp.linalg.solve(hess, grad)  # [k+1]
        t = 1.0
        while True:  # backtracking: halve the step until the penalised loss decreases
            candidate = _penalised_loss(A, y, offset, theta - t * step, l2)
            if candidate <= loss - 1e-4 * t * float(grad @ step) or t < 1e-10:
                break
            t *= 0.5
        if candidate > loss:  # no descent possible: at the optimum to machine precision
            converged = True
            break
        theta, improvement, loss = theta - t * step, loss - candidate, candidate
        if float(xp.abs(grad).max()) < tol or improvement < tol * max(1.0, abs(loss)):
            converged = True
            break
    return {
        "w": theta[:k],
        "b": float(theta[k]),
        "loss": loss,
        "iterations": iterations,
        "converged": converged,
    }


def effective_heads(alpha) -> float:
    """Participation ratio (Σ|α|)² / Σα²: 1 when one head carries all weight, n for uniform."""
    a = np.abs(np.asarray(to_numpy(alpha), dtype=np.float64))
    return float(a.sum() ** 2 / (a**2).sum()) if (a**2).sum() > 0 else float("nan")


def standardise(c, mask):
    """(z [H, B, T], σ [H]): c [H, B, T] divided by each head's std over the real positions.

    A head whose contribution never varies (σ = 0) keeps σ = 1 and so z = c.
    """
    xp = array_module(c)
    m = to_device(mask, device_of(c)).astype(bool)  # [B, T]
    sigma = xp.stack([c[h][m].std() for h in range(c.shape[0])])  # [H]
    sigma = xp.where(sigma > 0, sigma, 1.0)
    return c / sigma[:, None, None], sigma


def aggregation_from_contributions(c, offset, targets, mask, *, l2: float = 1e-4) -> dict:
    """The comparison of SPEC §4 from contributions c [H, B, T] and offset [B, T].

    Returns {"sigma", "alpha_trained", "alpha_fitted", "bias_fitted", "uniform_weight",
    "bias_uniform", "trained", "fitted", "uniform" (metrics dicts), "n_eff_trained",
    "n_eff_fitted", "converged"}; "alpha_*" are normalised to sum 1 (beside 1/n_heads) and
    "alpha_fitted_raw" are the fitted weights on the standardised contributions.
    """
    xp = array_module(c)
    H = c.shape[0]
    m = to_device(mask, device_of(c)).astype(bool)  # [B, T]
    labels = to_device(np.asarray(to_numpy(targets))[..., EOS] > 0.5, device_of(c))  # [B, T]
    z, sigma = standardise(c, m)  # [H, B, T], [H]
    X = z[:, m].T  # [N, H] one row per real position
    y, off = labels[m], offset[m]  # [N], [N]
    fitted = fit_logistic(X, y, offset=off, l2=l2)
    uniform = fit_logistic(X.sum(axis=1, keepdims=True), y, offset=off, l2=l2)
    alpha = fitted["w"]  # [H]
    score_fitted = offset + fitted["b"] + xp.tensordot(alpha.astype(z.dtype), z, axes=1)  # [B, T]
    score_uniform = offset + uniform["b"] + float(uniform["w"][0]) * z.sum(axis=0)  # [B, T]
    score_trained = offset + c.sum(axis=0)  # [B, T]
    alpha_h, sigma_h = np.asarray(to_numpy(alpha)), np.asarray(to_numpy(sigma), dtype=np.float64)
    return {
        "sigma": sigma_h.tolist(),
        "alpha_trained": (sigma_h / sigma_h.sum()).tolist(),
        "alpha_fitted": (alpha_h / alpha_h.sum()).tolist() if alpha_h.sum() != 0 else None,
        "alpha_fitted_raw": alpha_h.tolist(),
        "bias_fitted": fitted["b"],
        "uniform_weight": float(uniform["w"][0]),
        "bias_uniform": uniform["b"],
        "uniform_alpha": 1.0 / H,
        "trained": eos_metrics(score_trained, targets, mask),
        "fitted": eos_metrics(score_fitted, targets, mask),
        "uniform": eos_metrics(score_uniform, targets, mask),
        "n_eff_trained": effective_heads(sigma_h),
        "n_eff_fitted": effective_heads(alpha_h),
        "converged": bool(fitted["converged"] and uniform["converged"]),
    }


def aggregation_weights(params: dict, tokens, targets, mask, config, *, l2: float = 1e-4) -> dict:
    """Standardised contributions, fitted vs best-uniform vs trained aggregation (see module doc).

    tokens [B, T] on the parameters' device, targets [B, T, V], mask [B, T]. One-layer
    attention-only models only (raises ValueError otherwise).
    """
    check_single(params)
    c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
    return aggregation_from_contributions(c, offset, targets, mask, l2=l2)
