"""Token embedding (a row lookup) and learned positional embedding.

Pure: new arrays out; inputs never written.
"""

import numpy as np

from ..backend import array_module


def embedding_forward(tokens, W_E):
    """x = W_E[tokens], written as one_hot(tokens) @ W_E so that an ensemble needs no gather.

    tokens [..., B, T] int, W_E [..., V, d_model] -> x [..., B, T, d_model].
    The one-hot product equals the row lookup exactly; its transpose is the scatter-add
    that the backward needs, and with V = 6 it costs next to nothing.
    """
    xp = array_module(W_E)
    V = W_E.shape[-2]
    B, T = tokens.shape[-2:]
    one_hot = (tokens.reshape(*tokens.shape[:-2], B * T, 1) == xp.arange(V)).astype(W_E.dtype)
    x = one_hot @ W_E  # [..., B*T, V] @ [..., V, d] -> [..., B*T, d]
    x = x.reshape(*x.shape[:-2], B, T, x.shape[-1])  # [..., B, T, d]
    return x, (one_hot,)


def embedding_backward(dx, cache):
    """dW_E from dx [..., B, T, d_model]."""
    (one_hot,) = cache
    # in the forward pass this was: x = one_hot @ W_E, so now: dW_E = one_hotᵀ @ dx
    dx_rows = dx.reshape(*dx.shape[:-3], -1, dx.shape[-1])  # [..., B*T, d]
    dW_E = one_hot.swapaxes(-1, -2) @ dx_rows  # [..., V, B*T] @ [..., B*T, d] -> [..., V, d]
    return dW_E


def pos_embedding_forward(tokens, W_pos):
    """The positional embedding's part of the residual stream: W_pos[t] at every position t.

    tokens [..., B, T] (only their shape is read), W_pos [..., n_ctx, d] -> [..., B, T, d],
    a broadcast view of W_pos[:T] (read-only; the model adds it to the token embedding).
    """
    xp = array_module(W_pos)
    T = tokens.shape[-1]
    if T > W_pos.shape[-2]:
        raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={W_pos.shape[-2]}")
    pos = W_pos[..., None, :T, :]  # [..., 1, T, d]
    shape = np.broadcast_shapes(tokens.shape + (1,), pos.shape)[:-1] + (W_pos.shape[-1],)
    return xp.broadcast_to(pos, shape), (T, W_pos.shape)  # [..., B, T, d]


def pos_embedding_backward(dpos, cache):
    """dW_pos [..., n_ctx, d] from dpos [..., B, T, d]: each position's gradient summed over
    the batch (positions beyond T get none)."""
    T, shape = cache
    xp = array_module(dpos)
    # in the forward pass this was: pos[b, t] = W_pos[t] for every string b, so now we have:
    dW_pos = xp.zeros(shape, dtype=dpos.dtype)  # [..., n_ctx, d]
    dW_pos[..., :T, :] = dpos.sum(axis=-3)  # [..., B, T, d] -> [..., T, d]
    return dW_pos
