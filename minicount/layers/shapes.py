"""Tiny reshaping helpers shared by the layers (views, never copies where avoidable)."""


def rows(x):
    """[..., B, T, d] -> [..., B*T, d]: every position becomes a row of one matrix."""
    return x.reshape(*x.shape[:-3], -1, x.shape[-1])


def unrows(y, B, T):
    """[..., B*T, k] -> [..., B, T, k]: the inverse of rows."""
    return y.reshape(*y.shape[:-2], B, T, y.shape[-1])


def sum_rows(y):
    """Sum a [..., B*T, k] array over its rows -> [..., k] (the gradient of a broadcast bias)."""
    return y.sum(axis=-2)
