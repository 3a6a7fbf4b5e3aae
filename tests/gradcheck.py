"""Central finite differences in float64, and the error measure the gradient tests use."""

import numpy as np


def numerical_grad(f, x: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """d f / d x by central differences with one Richardson step, entry by entry.

    D(h) = (f(x+h) - f(x-h)) / 2h is off by O(h²); (4 D(h/2) - D(h)) / 3 cancels that term,
    leaving O(h⁴). With h = 1e-4 the truncation error stays far below 1e-6 even where the
    loss curves sharply (large logits), and rounding noise stays near 1e-11.
    x is perturbed in place and restored.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        diffs = []
        for h in (eps, eps / 2):
            x[i] = old + h
            up = f()
            x[i] = old - h
            down = f()
            diffs.append((up - down) / (2 * h))
        x[i] = old
        grad[i] = (4 * diffs[1] - diffs[0]) / 3
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖a‖ + ‖b‖, 1e-3): 0 for equal arrays, ~1 for unrelated ones.

    The floor makes gradients smaller than 1e-3 in norm compare absolutely: central
    differences carry rounding noise near 1e-10 whatever the size of the gradient, so a
    gradient that is 0 in exact arithmetic (a query that sees one key only has no gradient
    through its scores) would otherwise read as a relative error of 1.
    """
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-3))
