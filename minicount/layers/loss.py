"""Binary cross-entropy with logits against the next-set target, over real positions.

loss = Σ_{b,t real} Σ_v bce(logits[b,t,v], targets[b,t,v]) / (V · #real positions)

For an ensemble the loss is one number per model ([M]); the models' losses are independent,
so the gradient of their sum is each model's own gradient.

Pure: new arrays out; inputs never written.
"""

from ..backend import array_module


def bce_with_logits_forward(logits, targets, mask, n=None):
    """logits [..., B, T, V], targets [B, T, V] or [..., B, T, V], mask [.., B, T] -> loss [...].

    n [...] is the number of (position, column) terms to average over; by default those of
    this batch. A batch processed in slices passes the whole batch's n to every slice, so
    that the slices' losses and gradients add up to the whole batch's.
    """
    xp = array_module(logits)
    V = logits.shape[-1]
    weight = mask[..., None].astype(logits.dtype)  # [..., B, T, 1]
    if n is None:
        n = weight.sum(axis=(-3, -2, -1)) * V  # [...] number of (position, column) terms
    n = xp.asarray(n, dtype=logits.dtype)
    # bce(x, y) = -y log σ(x) - (1-y) log(1-σ(x)) = max(x, 0) - x y + log(1 + e^{-|x|})   (stable)
    per = xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    loss = (per * weight).sum(axis=(-3, -2, -1)) / n  # [...]
    return loss, (logits, targets, weight, n)


def bce_with_logits_backward(dloss, cache):
    """dlogits [..., B, T, V] from dloss (1.0, or [M] ones for an ensemble)."""
    logits, targets, weight, n = cache
    xp = array_module(logits)
    # d bce / dx = σ(x) - y, averaged with the same weights as the forward
    sig = 0.5 * (1.0 + xp.tanh(0.5 * logits))  # σ(x), without overflow for large |x|
    scale = xp.asarray(dloss / n, dtype=logits.dtype)[..., None, None, None]
    return (sig - targets) * weight * scale
