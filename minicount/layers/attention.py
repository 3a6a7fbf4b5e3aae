"""Causal multi-head self-attention without biases (TransformerLens names and shapes).

    q, k, v   = x @ W_Q[h], x @ W_K[h], x @ W_V[h]            per head h
    scores    = q @ kᵀ / sqrt(d_head), keys after the query masked out
    pattern   = softmax(scores) over keys
    z         = pattern @ v
    out       = Σ_h z_h @ W_O[h]

Hooks. ``hooks`` maps an activation name to a function ``fn(activation) -> activation``
that may read it or return an edited copy; it is how analysis records patterns, ablates
heads or edits attention without touching the parameters. Names (TransformerLens):
``hook_q``, ``hook_k``, ``hook_v`` [..., B, H, T, d_head], ``hook_attn_scores`` and
``hook_pattern`` [..., B, H, T, T], ``hook_z`` [..., B, H, T, d_head] and ``hook_result``
[..., B, H, T, d_model] (each head's output; computed only when hooked).
A forward pass with hooks is for analysis: its cache is not meant for the backward.
"""

import math

from ..backend import array_module
from .shapes import rows, unrows


def heads_as_matrix(W):
    """[..., H, d_model, d_head] -> [..., d_model, H*d_head]: all heads' projections side by side."""
    H, d_model, d_head = W.shape[-3:]
    return W.swapaxes(-3, -2).reshape(*W.shape[:-3], d_model, H * d_head)


def matrix_as_heads(M, H):
    """The inverse of heads_as_matrix: [..., d_model, H*d_head] -> [..., H, d_model, d_head]."""
    d_model = M.shape[-2]
    return M.reshape(*M.shape[:-2], d_model, H, -1).swapaxes(-3, -2)


def split_heads(y_rows, B, T, H):
    """[..., B*T, H*d_head] -> [..., B, H, T, d_head]."""
    return y_rows.reshape(*y_rows.shape[:-2], B, T, H, -1).swapaxes(-3, -2)


def merge_heads(z):
    """[..., B, H, T, d_head] -> [..., B*T, H*d_head] (a copy: the inverse of split_heads)."""
    B, H, T, d_head = z.shape[-4:]
    return z.swapaxes(-3, -2).reshape(*z.shape[:-4], B * T, H * d_head)


def causal_mask(T, xp):
    """[T, T] bool, True where key j may be seen from query t (j <= t)."""
    return xp.tril(xp.ones((T, T), dtype=bool))


def softmax(scores, axis=-1):
    xp = array_module(scores)
    e = xp.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_forward(x, W_Q, W_K, W_V, W_O, hooks=None):
    """x [..., B, T, d_model]; W_Q/W_K/W_V [..., H, d_model, d_head]; W_O [..., H, d_head, d_model].

    Returns out [..., B, T, d_model] and the cache (a dict of named activations).
    """
    xp = array_module(x)
    hooks = hooks or {}
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    B, T = x.shape[-3:-1]
    H, d_head = W_Q.shape[-3], W_Q.shape[-1]
    x_rows = rows(x)  # [..., B*T, d_model]

    # 1. project every position to queries, keys and values, per head
    q = hook("hook_q", split_heads(x_rows @ heads_as_matrix(W_Q), B, T, H))  # [..., B, H, T, d_head]
    k = hook("hook_k", split_heads(x_rows @ heads_as_matrix(W_K), B, T, H))  # [..., B, H, T, d_head]
    v = hook("hook_v", split_heads(x_rows @ heads_as_matrix(W_V), B, T, H))  # [..., B, H, T, d_head]

    # 2. scores: how much each query t matches each key j
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(d_head))  # [..., B, H, T, T]
    scores = hook("hook_attn_scores", scores)

    # 3. causal mask and softmax over keys: pattern[t, j] = weight of key j for query t
    scores = xp.where(causal_mask(T, xp), scores, -xp.inf)
    pattern = hook("hook_pattern", softmax(scores))  # [..., B, H, T, T], rows sum to 1

    # 4. mix the values
    z = hook("hook_z", pattern @ v)  # [..., B, H, T, T] @ [..., B, H, T, d_head] -> [..., B, H, T, d_head]

    # 5. project back to the residual stream and sum over heads
    z_rows = merge_heads(z)  # [..., B*T, H*d_head]
    W_O_rows = W_O.reshape(*W_O.shape[:-3], H * d_head, W_O.shape[-1])  # [..., H*d_head, d_model]
    if "hook_result" in hooks:
        # each head's own output, [..., B, H, T, d_model]; then the same sum, head by head
        result = hook("hook_result", z @ W_O[..., None, :, :, :])
        out = result.sum(axis=-3)  # [..., B, T, d_model]
    else:
        out = unrows(z_rows @ W_O_rows, B, T)  # [..., B*T, H*d_head] @ [..., H*d_head, d_model]

    cache = {
        "x_rows": x_rows, "q": q, "k": k, "v": v, "pattern": pattern, "z_rows": z_rows,
        "W_Q": W_Q, "W_K": W_K, "W_V": W_V, "W_O_rows": W_O_rows,
    }  # fmt: skip
    return out, cache


def attention_backward(dout, cache):
    """(dx, dW_Q, dW_K, dW_V, dW_O) from dout [..., B, T, d_model]; steps in reverse order."""
    x_rows, q, k, v, pattern = (cache[n] for n in ("x_rows", "q", "k", "v", "pattern"))
    z_rows, W_O_rows = cache["z_rows"], cache["W_O_rows"]
    B, H, T, d_head = q.shape[-4:]
    dout_rows = rows(dout)  # [..., B*T, d_model]

    # 5. in the forward pass this was: out = merge_heads(z) @ W_O, so now we have:
    dW_O = (z_rows.swapaxes(-1, -2) @ dout_rows).reshape(cache["W_O_rows"].shape[:-2] + (H, d_head, -1))
    dz = split_heads(dout_rows @ W_O_rows.swapaxes(-1, -2), B, T, H)  # [..., B, H, T, d_head]

    # 4. z = pattern @ v
    dpattern = dz @ v.swapaxes(-1, -2)  # [..., B, H, T, T]
    dv = pattern.swapaxes(-1, -2) @ dz  # [..., B, H, T, d_head]

    # 3. pattern = softmax(scores): dscores = pattern * (dpattern - Σ_j dpattern * pattern);
    #    masked keys have pattern 0, so their score gets no gradient
    dscores = pattern * (dpattern - (dpattern * pattern).sum(axis=-1, keepdims=True))

    # 2. scores = q @ kᵀ / sqrt(d_head)
    dscores *= 1.0 / math.sqrt(d_head)
    dq = dscores @ k  # [..., B, H, T, d_head]
    dk = dscores.swapaxes(-1, -2) @ q  # [..., B, H, T, d_head]

    # 1. q, k, v = x @ W_Q, x @ W_K, x @ W_V; x fans out to all three, so its gradients add up
    dx_rows = 0
    grads = []
    for dy, W in ((dq, cache["W_Q"]), (dk, cache["W_K"]), (dv, cache["W_V"])):
        dy_rows = merge_heads(dy)  # [..., B*T, H*d_head]
        grads.append(matrix_as_heads(x_rows.swapaxes(-1, -2) @ dy_rows, H))  # [..., H, d_model, d_head]
        dx_rows = dx_rows + dy_rows @ heads_as_matrix(W).swapaxes(-1, -2)  # [..., B*T, d_model]
    dW_Q, dW_K, dW_V = grads
    return unrows(dx_rows, B, T), dW_Q, dW_K, dW_V, dW_O
