"""Logistic regression by batched damped Newton steps: G independent problems at once,
the bias never penalised (docs/method.md §4). The solver behind the aggregation weights, the
solo slopes and the linear read-outs (aggregation.py, linear.py).

    fit_logistic_batched  G problems: X [G, N, k], y [G, N], offset, mask, l2 per problem
    fit_logistic          one problem: X [N, k], y [N]
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, to_numpy
from ..threads import blas_limit

L2 = 1e-4  # default L2 strength on the fitted weights of standardised contributions


def _objective(u, m, n, w, l2):
    """([G] mean BCE over rows m from the signed logits u = (1 - 2y) z [G, N], + (l2 / 2)|w|²,
    and the BCE per row [G, N]: the softplus of u that the next Newton step needs)."""
    xp = array_module(u)
    bce = xp.logaddexp(0.0, u)  # [G, N] log(1 + e^u), exact even where it is tiny
    return (bce * m).sum(axis=1) / n + 0.5 * l2 * (w * w).sum(axis=1), bce


def _newton_step(state, k):
    """(step [g, k+1], grad [g, k+1]) of the live problems in state (see fit_logistic_batched)."""
    xp = array_module(state["z"])
    A, A_T, r, m, n = state["A"], state["A_T"], state["r"], state["m"], state["n"]
    u = r * state["z"]  # [g, N] logit signed so that u < 0 is the right side
    softplus = state["softplus"]  # [g, N] log(1 + e^u), kept from the objective at z
    wrong = xp.exp(u - softplus)  # [g, N] σ(u) = |p - y|, exact where it is tiny
    residual = m * r * wrong  # [g, N] p - y
    curvature = m * wrong * xp.exp(-softplus)  # [g, N] σ(u) σ(-u) = p (1 - p)
    pen = state["l2"][:, None] * (xp.arange(k + 1) < k)  # [g, k+1], 0 on the bias
    grad = (A_T @ residual[..., None])[..., 0] / n[:, None] + pen * state["theta"]  # [g, k+1]
    hess = A_T @ (A * curvature[..., None])  # [g, k+1, N] @ [g, N, k+1] -> [g, k+1, k+1]
    # the jitter keeps a solve possible where the curvature vanishes; the optimum is unmoved
    hess = hess / n[:, None, None] + (pen[:, :, None] + 1e-12) * xp.eye(k + 1)
    return xp.linalg.solve(hess, grad[..., None])[..., 0], grad


def _line_search(state, step, grad, skip, k):
    """(accepted [g], t [g], loss [g], shift [g, N], softplus [g, N]): backtracking per
    problem, halving t until the objective falls by at least 1e-4 t (grad · step), and the
    softplus of the signed logits where it stopped. Problems in skip are left alone."""
    xp = array_module(step)
    A, r, m, n, l2 = state["A"], state["r"], state["m"], state["n"], state["l2"]
    shift = (A @ step[..., None])[..., 0]  # [g, N] change of z per unit step
    decrease = (grad * step).sum(axis=1)  # [g] >= 0 (the Hessian is positive definite)
    t = xp.ones(step.shape[0])
    accepted, loss, softplus = skip.copy(), state["loss"], state["softplus"]
    for _ in range(40):
        pending = ~accepted
        if not bool(pending.any()):
            break
        z = state["z"] - t[:, None] * shift  # [g, N]
        w = state["theta"][:, :k] - t[:, None] * step[:, :k]  # [g, k]
        trial, bce = _objective(r * z, m, n, w, l2)  # [g], [g, N]
        ok = pending & (trial <= state["loss"] - 1e-4 * t * decrease)
        loss = xp.where(ok, trial, loss)
        softplus = xp.where(ok[:, None], bce, softplus)
        accepted |= ok
        t = xp.where(pending & ~ok, 0.5 * t, t)
    return accepted & ~skip, t, loss, shift, softplus


def fit_logistic_batched(
    X,
    y,
    *,
    offset=None,
    mask=None,
    l2=L2,
    max_iter: int = 200,
    tol: float = 1e-9,
) -> dict:
    """G independent logistic regressions by batched damped Newton steps.

    X [G, N, k] features, y [G, N] labels in {0, 1}, offset [G, N] a fixed term of the logit,
    mask [G, N] bool the rows that belong to each problem (default: all), l2 a float or [G].
    Problem g minimises mean_rows BCE(y, offset + X @ w + b) + (l2 / 2)|w|²: the bias b is
    never penalised, so shifting a feature by a constant moves only b.

    Every Newton step is damped by backtracking (per problem) until the objective decreases,
    and the BCE is computed with logaddexp, so nothing overflows. A problem has converged when
    its Newton step is below tol relative to its parameters, or the decrease that step
    predicts is below the rounding of the loss; finished problems leave the batch. With
    l2 > 0 the optimum is finite and is reached. With l2 = 0 on data that some weighting
    separates, the optimum lies at infinity: the weights then grow by about one margin per
    step until max_iter and the problem reports converged = False (its weights are finite,
    their direction meaningful). The same holds for the bias when all labels of a problem
    are equal.

    Returns {"w": [G, k], "b": [G], "loss": [G], "iterations": [G], "converged": [G] bool},
    arrays on the module of X, float64. On the CPU BLAS runs on one thread meanwhile: the
    Hessians are [k+1, N] @ [N, k+1] products, which OpenBLAS's threads slow down.
    """
    if array_module(X) is np:
        with blas_limit(1):
            return _fit_logistic(X, y, offset, mask, l2, max_iter, tol)
    return _fit_logistic(X, y, offset, mask, l2, max_iter, tol)


def _fit_inputs(X, y, offset, mask, l2) -> tuple:
    """The fit's inputs checked and in float64: X [G, N, k], y [G, N], m [G, N] (1.0 where a
    row belongs to its problem), offset [G, N], l2 [G]."""
    xp = array_module(X)
    X = xp.asarray(X, dtype=xp.float64)
    if X.ndim != 3:
        raise ValueError(f"X must be [G, N, k], got shape {tuple(X.shape)}")
    G, N, k = X.shape
    y = xp.asarray(y, dtype=xp.float64)
    if y.shape != (G, N) or N == 0:
        raise ValueError(f"y must be [G, N] = [{G}, {N}] with N > 0, got {tuple(y.shape)}")
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError("y must hold labels 0 or 1")
    m = xp.ones((G, N), dtype=bool) if mask is None else xp.asarray(mask, dtype=bool)
    if m.shape != (G, N) or bool((m.sum(axis=1) == 0).any()):
        raise ValueError("mask must be [G, N] and leave every problem at least one row")
    offset = xp.zeros((G, N)) if offset is None else xp.asarray(offset, dtype=xp.float64)
    l2 = xp.asarray(l2, dtype=xp.float64) * xp.ones(G)  # [G]
    if bool((l2 < 0).any()):
        raise ValueError(f"l2 must be >= 0, got {to_numpy(l2).tolist()}")
    return X, y, m.astype(xp.float64), offset, l2


def _start(X, y, m, offset, l2) -> dict:
    """The Newton iteration's state at theta = 0: one row per problem still being fitted."""
    xp = array_module(X)
    G, N, k = X.shape
    A = xp.concatenate([X * m[..., None], m[..., None]], axis=2)  # [G, N, k+1], bias last
    state = {
        "index": xp.arange(G),  # which problem each live row of the batch is
        "A": A,
        "A_T": xp.ascontiguousarray(A.transpose(0, 2, 1)),  # [G, k+1, N]
        "r": (1.0 - 2.0 * y) * m,  # [G, N] -1 for label 1, +1 for label 0
        "m": m,  # [G, N]; rows outside a problem hold zeros and weigh nothing
        "n": m.sum(axis=1),  # [G] rows per problem
        "l2": l2,
        "theta": xp.zeros((G, k + 1)),  # [G, k+1] weights, then the bias
        "z": offset * m,  # [G, N] logits
        "iterations": xp.zeros(G, dtype=xp.int64),
    }
    state["loss"], state["softplus"] = _objective(
        state["r"] * state["z"], m, state["n"], state["theta"][:, :k], l2
    )
    return state


def _fit_logistic(X, y, offset, mask, l2, max_iter: int, tol: float) -> dict:
    """fit_logistic_batched itself: damped Newton steps on every problem at once, each
    problem retired from the batch as it converges (or can descend no further)."""
    X, y, m, offset, l2 = _fit_inputs(X, y, offset, mask, l2)
    xp = array_module(X)
    G, N, k = X.shape
    state = _start(X, y, m, offset, l2)
    out = {
        "theta": xp.zeros((G, k + 1)),
        "loss": xp.zeros(G),
        "iterations": xp.zeros(G, dtype=xp.int64),
        "converged": xp.zeros(G, dtype=bool),
    }

    def retire(which, converged):
        """Write the problems in which [g] to out, with their converged flags [g]."""
        index = state["index"][which]
        for key in ("theta", "loss", "iterations"):
            out[key][index] = state[key][which]
        out["converged"][index] = converged[which]

    for _ in range(max_iter):
        if state["index"].shape[0] == 0:
            break
        step, grad = _newton_step(state, k)
        theta = state["theta"]
        size = xp.abs(step).max(axis=1) / (1.0 + xp.abs(theta).max(axis=1))  # [g]
        # converged: a tiny Newton step, or a predicted decrease below the loss's rounding
        # (then the line search would only chase noise); the last full step is still taken
        done = (size < tol) | ((grad * step).sum(axis=1) < 1e-15 * state["loss"])
        moved, t, loss, shift, softplus = _line_search(state, step, grad, done, k)
        stuck = ~done & ~moved  # no descent left: the optimum to rounding, or underflow
        t = xp.where(done, 1.0, t)
        state["theta"] = xp.where((moved | done)[:, None], theta - t[:, None] * step, theta)
        state["z"] = xp.where(moved[:, None], state["z"] - t[:, None] * shift, state["z"])
        state["loss"] = xp.where(moved, loss, state["loss"])
        state["softplus"] = softplus  # at the new z where moved (bitwise: the same z), else old
        state["iterations"] = state["iterations"] + moved
        finished = done | stuck
        if bool(finished.any()):
            retire(finished, done | (stuck & (size < 1e-4)))
            state = {key: value[~finished] for key, value in state.items()}
    retire(xp.ones(state["index"].shape[0], dtype=bool), xp.zeros(state["index"].shape[0], bool))
    return {
        "w": out["theta"][:, :k],
        "b": out["theta"][:, k],
        "loss": out["loss"],
        "iterations": out["iterations"],
        "converged": out["converged"],
    }


def fit_logistic(X, y, *, offset=None, l2: float = L2, max_iter: int = 200, tol: float = 1e-9):
    """One logistic regression: X [N, k], y [N], offset [N]; see fit_logistic_batched.

    Returns {"w": [k], "b": float, "loss": float, "iterations": int, "converged": bool}.
    """
    xp = array_module(X)
    X = xp.asarray(X, dtype=xp.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be [N, k], got shape {tuple(X.shape)}")
    y = xp.asarray(y, dtype=xp.float64).reshape(-1)  # [N]
    if y.shape[0] != X.shape[0] or X.shape[0] == 0:
        raise ValueError(f"y must have one label per row of X ({X.shape[0]}), got {y.shape[0]}")
    off = None if offset is None else xp.asarray(offset, dtype=xp.float64).reshape(1, -1)
    fit = fit_logistic_batched(X[None], y[None], offset=off, l2=l2, max_iter=max_iter, tol=tol)
    return {
        "w": fit["w"][0],
        "b": float(fit["b"][0]),
        "loss": float(fit["loss"][0]),
        "iterations": int(fit["iterations"][0]),
        "converged": bool(fit["converged"][0]),
    }
