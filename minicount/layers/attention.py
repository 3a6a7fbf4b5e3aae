"""Causal multi-head self-attention without biases, written as the textbook computes it.

    q, k, v   = x @ W_Q[h], x @ W_K[h], x @ W_V[h]            per head h
    scores    = q @ kᵀ / sqrt(d_head), keys after the query masked out
    pattern   = softmax(scores) over keys
    z         = pattern @ v
    out       = Σ_h z_h @ W_O[h]

This is the reference: every line is one step of the formulas above, and the backward
differentiates them one by one in reverse. minicount/fast/ holds the same computation
rearranged for speed (fast/attention.py for NumPy and CuPy, fast/attention_cuda.py with a
fused CUDA kernel); tests/test_fast_paths.py checks both against this file, and the model
chooses between them only when asked to (``model.forward(..., attention=...)``).

Hooks. ``hooks`` maps an activation name to a function ``fn(activation) -> activation``
that may read it or return an edited copy; it is how analysis records patterns, ablates
heads or edits attention without touching the parameters. Names (TransformerLens):
``hook_q``, ``hook_k``, ``hook_v`` [..., B, H, T, d_head], ``hook_attn_scores`` and
``hook_pattern`` [..., B, H, T, T], ``hook_z`` [..., B, H, T, d_head] and ``hook_result``
[..., B, H, T, d_model] (each head's output).

Shapes: the leading ``...`` is the optional model axis [M] of an ensemble. Activations
that belong to one head have the head axis H after the batch axis B.
"""

import functools
import math

from ..backend import array_module


@functools.lru_cache(maxsize=64)
def causal_mask(T, xp, dtype=bool):
    """[T, T], 1 (True) where key j may be seen from query t (j <= t), else 0.

    Cached (one array per T, module and dtype) and therefore read-only on NumPy (CuPy has
    no read-only arrays: there, never write to it).
    """
    mask = xp.tril(xp.ones((T, T), dtype=dtype))  # [T, T]
    if xp.__name__ == "numpy":
        mask.flags.writeable = False
    return mask


def softmax(scores, axis=-1):
    """The textbook softmax, shifted by the maximum so that exp cannot overflow."""
    xp = array_module(scores)
    e = xp.exp(scores - scores.max(axis=axis, keepdims=True))  # same shape as scores
    return e / e.sum(axis=axis, keepdims=True)


def per_head(x):
    """[..., B, T, d_model] -> [..., B, 1, T, d_model]: x lined up with the head axis."""
    return x[..., None, :, :]


def attention_forward(x, W_Q, W_K, W_V, W_O, hooks=None):
    """x [..., B, T, d_model]; W_Q/W_K/W_V [..., H, d_model, d_head]; W_O [..., H, d_head, d_model].

    Returns out [..., B, T, d_model] and the cache (a dict of named activations).
    """
    xp = array_module(x)
    hooks = hooks or {}
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    T, d_head = x.shape[-2], W_Q.shape[-1]
    W = lambda w: w[..., None, :, :, :]  # noqa: E731  [..., H, a, b] -> [..., 1, H, a, b]

    # 1. project every position to a query, a key and a value, per head:
    #    [..., B, 1, T, d_model] @ [..., 1, H, d_model, d_head] -> [..., B, H, T, d_head]
    q = hook("hook_q", per_head(x) @ W(W_Q))  # [..., B, H, T, d_head]
    k = hook("hook_k", per_head(x) @ W(W_K))  # [..., B, H, T, d_head]
    v = hook("hook_v", per_head(x) @ W(W_V))  # [..., B, H, T, d_head]

    # 2. scores: how well query t matches key j
    kT = k.swapaxes(-1, -2)  # [..., B, H, d_head, T]
    scores = hook("hook_attn_scores", q @ kT / math.sqrt(d_head))  # [..., B, H, T, T]

    # 3. causal mask, then softmax over the keys: pattern[t, j] is the weight of key j for query t
    masked = xp.where(causal_mask(T, xp), scores, -xp.inf)  # [..., B, H, T, T], -inf where j > t
    pattern = hook("hook_pattern", softmax(masked))  # [..., B, H, T, T], rows sum to 1

    # 4. each query's mix of the values
    z = hook("hook_z", pattern @ v)  # [..., B, H, T, T] @ [..., B, H, T, d_head] -> [.., d_head]

    # 5. each head's output in the residual stream, then their sum over heads:
    #    [..., B, H, T, d_head] @ [..., 1, H, d_head, d_model] -> [..., B, H, T, d_model]
    result = hook("hook_result", z @ W(W_O))  # [..., B, H, T, d_model]
    out = result.sum(axis=-3)  # [..., B, T, d_model]

    cache = {"x": x, "W_Q": W_Q, "W_K": W_K, "W_V": W_V, "W_O": W_O,
             "q": q, "k": k, "v": v, "pattern": pattern, "z": z}  # fmt: skip
    return out, cache


def sum_over_batch(a):
    """[..., B, H, r, c] -> [..., H, r, c]: a weight's gradient, summed over the strings."""
    return a.sum(axis=-4)


def attention_backward(dout, cache):
    """(dx, dW_Q, dW_K, dW_V, dW_O) from dout [..., B, T, d_model]; steps in reverse order."""
    x, q, k, v, pattern, z = (cache[n] for n in ("x", "q", "k", "v", "pattern", "z"))
    W_Q, W_K, W_V, W_O = (cache[n] for n in ("W_Q", "W_K", "W_V", "W_O"))
    d_head = q.shape[-1]
    W_T = lambda w: w[..., None, :, :, :].swapaxes(-1, -2)  # noqa: E731  [..., 1, H, b, a]

    # 5. in the forward pass this was: out = Σ_h z_h @ W_O[h], so now we have:
    #    every head receives all of dout, and W_O[h] collects z_hᵀ @ dout over the strings
    dresult = per_head(dout)  # [..., B, 1, T, d_model], the same for every head
    zT = z.swapaxes(-1, -2)  # [..., B, H, d_head, T]
    dW_O = sum_over_batch(zT @ dresult)  # [.., B, H, d_head, d_model] -> [.., H, d_head, d_model]
    W_O_T = W_T(W_O)  # [..., 1, H, d_model, d_head]
    dz = dresult @ W_O_T  # [..., B, 1, T, d_model] @ [.., d_model, d_head] -> [.., B, H, T, d_head]

    # 4. z = pattern @ v
    dpattern = dz @ v.swapaxes(-1, -2)  # [..., B, H, T, d_head] @ [.., d_head, T] -> [.., T, T]
    dv = pattern.swapaxes(-1, -2) @ dz  # [..., B, H, T, T] @ [.., T, d_head] -> [.., T, d_head]

    # 3. pattern = softmax(masked scores): for each row, dscores = pattern * (dpattern - Σ_j
    #    dpattern * pattern). Masked keys have pattern 0, so their scores get no gradient.
    row_dot = (dpattern * pattern).sum(axis=-1, keepdims=True)  # [..., B, H, T, 1]
    dscores = pattern * (dpattern - row_dot)  # [..., B, H, T, T]

    # 2. scores = q @ kᵀ / sqrt(d_head)
    dq = dscores @ k / math.sqrt(d_head)  # [..., B, H, T, T] @ [.., T, d_head] -> [.., T, d_head]
    dk = dscores.swapaxes(-1, -2) @ q / math.sqrt(d_head)  # [..., B, H, T, d_head]

    # 1. q, k, v = x @ W_Q, x @ W_K, x @ W_V: x fans out to all three and to every head,
    #    so its gradients add up (+=); each weight collects xᵀ @ d(its output) over the strings
    #    (dy is dq, dk or dv [..., B, H, T, d_head]; W is W_Q, W_K or W_V)
    x_T = per_head(x).swapaxes(-1, -2)  # [..., B, 1, d_model, T]
    dx = 0
    dWs = []
    for dy, W in ((dq, W_Q), (dk, W_K), (dv, W_V)):
        dW = sum_over_batch(x_T @ dy)  # [.., B, H, d_model, d_head] -> [.., H, d_model, d_head]
        dWs.append(dW)
        dx += (dy @ W_T(W)).sum(axis=-3)  # [..., B, H, T, d_model] -> [..., B, T, d_model]
    dW_Q, dW_K, dW_V = dWs
    return dx, dW_Q, dW_K, dW_V, dW_O
