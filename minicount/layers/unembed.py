"""Unembedding: residual stream -> logits over the vocabulary.

Pure: new arrays out; inputs never written.
"""

from .shapes import rows, sum_rows, unrows


def unembed_forward(x, W_U, b_U):
    """logits = x @ W_U + b_U. x [..., B, T, d_model], W_U [..., d_model, V], b_U [..., V]."""
    B, T = x.shape[-3:-1]
    x_rows = rows(x)  # [..., B*T, d]
    logits = x_rows @ W_U + b_U[..., None, :]  # [..., B*T, d] @ [..., d, V] -> [..., B*T, V]
    return unrows(logits, B, T), (x_rows, W_U, B, T)


def unembed_backward(dlogits, cache):
    """(dx, dW_U, db_U) from dlogits [..., B, T, V]."""
    x_rows, W_U, B, T = cache
    dlogits_rows = rows(dlogits)  # [..., B*T, V]
    # in the forward pass this was: logits = x @ W_U + b_U, so now we have:
    db_U = sum_rows(dlogits_rows)  # [..., V]
    dW_U = x_rows.swapaxes(-1, -2) @ dlogits_rows  # [..., d, B*T] @ [..., B*T, V] -> [..., d, V]
    dx = dlogits_rows @ W_U.swapaxes(-1, -2)  # [..., B*T, V] @ [..., V, d] -> [..., B*T, d]
    return unrows(dx, B, T), dW_U, db_U
