"""Token embedding (a row lookup) and learned positional embedding."""

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


def pos_embedding_forward(x, W_pos):
    """x + W_pos[:T]. x [..., B, T, d], W_pos [..., n_ctx, d] -> [..., B, T, d]."""
    T = x.shape[-2]
    if T > W_pos.shape[-2]:
        raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={W_pos.shape[-2]}")
    return x + W_pos[..., None, :T, :], (T, W_pos.shape)


def pos_embedding_backward(dx, cache):
    """dW_pos [..., n_ctx, d]: each position's gradient summed over the batch."""
    T, shape = cache
    xp = array_module(dx)
    dW_pos = xp.zeros(shape, dtype=dx.dtype)
    dW_pos[..., :T, :] = dx.sum(axis=-3)  # [..., B, T, d] -> [..., T, d]
    return dW_pos
