"""LayerNorm over the last axis (eps 1e-5), as in llm.c's layernorm_forward/backward.

Pure: new arrays out; inputs never written.
"""

from ..backend import array_module

EPS = 1e-5


def layernorm_forward(x, w, b, eps=EPS):
    """out = (x - mean) / sqrt(var + eps) * w + b. x [..., B, T, d], w/b [..., d]."""
    xp = array_module(x)
    mean = x.mean(axis=-1, keepdims=True)  # [..., B, T, 1]
    xc = x - mean  # [..., B, T, d]
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)  # [..., B, T, 1]
    xhat = xc * rstd  # [..., B, T, d]
    out = xhat * w[..., None, None, :] + b[..., None, None, :]
    return out, (xhat, rstd, w)


def layernorm_backward(dout, cache):
    """(dx, dw, db) from dout [..., B, T, d]."""
    xhat, rstd, w = cache
    # 2. in the forward pass this was: out = xhat * w + b
    db = dout.sum(axis=(-3, -2))  # [..., d]
    dw = (dout * xhat).sum(axis=(-3, -2))  # [..., d]
    dxhat = dout * w[..., None, None, :]  # [..., B, T, d]
    # 1. xhat = (x - mean) * rstd; differentiating through mean and rstd gives
    #    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dx = rstd * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, dw, db
