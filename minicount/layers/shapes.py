"""Tiny reshaping helpers shared by the layers (views, never copies where avoidable).

Pure: views or new arrays; inputs never written.
"""

from ..backend import array_module


def rows(x):
    """[..., B, T, d] -> [..., B*T, d]: every position becomes a row of one matrix."""
    return x.reshape(*x.shape[:-3], -1, x.shape[-1])


def unrows(y, B, T):
    """[..., B*T, k] -> [..., B, T, k]: the inverse of rows."""
    return y.reshape(*y.shape[:-2], B, T, y.shape[-1])


def split_heads(y_rows, B, T, H):
    """[..., B*T, H*d_head] -> [..., B, H, T, d_head] (a contiguous copy, ready for matmul)."""
    xp = array_module(y_rows)
    return xp.ascontiguousarray(y_rows.reshape(*y_rows.shape[:-2], B, T, H, -1).swapaxes(-3, -2))


def merge_heads(z):
    """[..., B, H, T, d_head] -> [..., B*T, H*d_head] (a copy: the inverse of split_heads)."""
    B, H, T, d_head = z.shape[-4:]
    return z.swapaxes(-3, -2).reshape(*z.shape[:-4], B * T, H * d_head)


def sum_rows(y):
    """Sum a [..., B*T, k] array over its rows -> [..., k] (the gradient of a broadcast bias)."""
    return y.sum(axis=-2)
