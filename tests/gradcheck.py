"""Central finite differences in float64, and the error measure the gradient tests use."""

import numpy as np


def numerical_grad(f, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """d f / d x by central differences, entry by entry (x is perturbed in place and restored)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖a‖ + ‖b‖, 1e-3): 0 for equal arrays, ~1 for unrelated ones.

    The floor makes gradients smaller than 1e-3 in norm compare absolutely: central
    differences carry rounding noise near 1e-10 whatever the size of the gradient, so a
    gradient that is 0 in exact arithmetic (a query that sees one key only has no gradient
    through its scores) would otherwise read as a relative error of 1.
    """
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-3))
