"""Textbook versions of the paths that minicount makes fast, for the tests to check against.

Written for clarity, not speed: per-head einsums, the max-shifted softmax over masked
scores, the softmax backward as in any textbook, the whole batch at once.
"""

import math

import numpy as np


def softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(x, W_Q, W_K, W_V, W_O):
    """x [..., B, T, d]; W_Q/W_K/W_V [..., H, d, e]; W_O [..., H, e, d] -> out, cache."""
    T, e = x.shape[-2], W_Q.shape[-1]
    q = np.einsum("...btd,...hde->...bhte", x, W_Q)  # [..., B, H, T, e]
    k = np.einsum("...btd,...hde->...bhte", x, W_K)
    v = np.einsum("...btd,...hde->...bhte", x, W_V)
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(e)  # [..., B, H, T, T]
    causal = np.tril(np.ones((T, T), dtype=bool))
    pattern = softmax(np.where(causal, scores, -np.inf))
    z = pattern @ v  # [..., B, H, T, e]
    out = np.einsum("...bhte,...hed->...btd", z, W_O)
    return out, dict(
        x=x, q=q, k=k, v=v, scores=scores, pattern=pattern, z=z, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O
    )


def attention_backward(dout, c):
    """(dx, dW_Q, dW_K, dW_V, dW_O) from dout [..., B, T, d]."""
    e = c["q"].shape[-1]
    dW_O = np.einsum("...bhte,...btd->...hed", c["z"], dout)
    dz = np.einsum("...btd,...hed->...bhte", dout, c["W_O"])
    dpattern = dz @ c["v"].swapaxes(-1, -2)
    dv = c["pattern"].swapaxes(-1, -2) @ dz
    p = c["pattern"]
    dscores = p * (dpattern - (dpattern * p).sum(axis=-1, keepdims=True)) / math.sqrt(e)
    dq = dscores @ c["k"]
    dk = dscores.swapaxes(-1, -2) @ c["q"]
    grads, dx = [], 0
    for dy, W in ((dq, c["W_Q"]), (dk, c["W_K"]), (dv, c["W_V"])):
        grads.append(np.einsum("...btd,...bhte->...hde", c["x"], dy))
        dx = dx + np.einsum("...bhte,...hde->...btd", dy, W)
    return (dx, *grads, dW_O)


def next_set_targets(tokens):
    """Per position, in plain Python: targets [B, T, V] and mask [B, T] (SPEC's definition)."""
    B, T = tokens.shape
    targets = np.zeros((B, T, 6), dtype=np.float32)
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        ones = zeros = 0
        for t in range(T):
            tok = int(tokens[b, t])
            if tok == 5:  # PAD
                continue
            ones += tok == 1
            zeros += tok == 0
            mask[b, t] = True
            targets[b, t, :3] = 1
            targets[b, t, 4] = ones > zeros  # EOS allowed once the 1s lead
    return targets, mask
