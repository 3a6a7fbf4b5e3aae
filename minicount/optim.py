"""AdamW, learning-rate schedules and gradient clipping, written out by hand.

Updates are in place (the parameter and moment arrays are reused every step). They are
elementwise, so an ensemble (a leading model axis) needs nothing special, except clipping,
which takes each member's own global norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .backend import array_module

SCHEDULES = ("constant", "cosine")  # learning-rate schedules after warm-up (see lr_at)


@dataclass
class AdamW:
    """AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient.

    m = β1 m + (1-β1) g            v = β2 v + (1-β2) g²
    p -= lr · (m̂ / (sqrt(v̂) + eps) + weight_decay · p),   m̂ = m/(1-β1^t), v̂ = v/(1-β2^t)
    """

    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def init_state(self, params: dict) -> dict:
        """Zero first and second moments for every parameter, and step 0."""
        xp = array_module(*params.values())
        state = {"step": 0}
        for k, p in params.items():
            state["m." + k] = xp.zeros_like(p)
            state["v." + k] = xp.zeros_like(p)
        return state

    def step(self, params: dict, grads: dict, state: dict, lr: float | None = None) -> None:
        """One update of params (in place) from grads; lr overrides self.lr (for schedules)."""
        xp = array_module(*params.values())
        lr = self.lr if lr is None else lr
        state["step"] += 1
        t = state["step"]
        bias1 = 1.0 - self.beta1**t
        bias2 = 1.0 - self.beta2**t
        for k, p in params.items():
            g, m, v = grads[k], state["m." + k], state["v." + k]
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            if self.weight_decay:
                p *= 1.0 - lr * self.weight_decay
            # p -= lr * m̂ / (sqrt(v̂) + eps), with the bias corrections folded into scalars
            denom = xp.sqrt(v)
            denom *= 1.0 / math.sqrt(bias2)
            denom += self.eps
            p -= (lr / bias1) * (m / denom)


def lr_at(
    step: int, *, lr: float, total_steps: int, warmup: int = 0, schedule: str = "constant"
) -> float:
    """Learning rate at a step (0-based): linear warm-up, then constant or cosine to 10% of lr."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def grad_norms(grads: dict, ensemble: bool):
    """Global gradient norm: a scalar array for one model, [M] for an ensemble (per member)."""
    xp = array_module(*grads.values())
    total = 0
    for g in grads.values():
        axes = tuple(range(1, g.ndim)) if ensemble else None
        total = total + (g * g).sum(axis=axes)
    return xp.sqrt(total)


CLIP_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_: keeps the scale finite at norm 0


def clip_grads(grads: dict, max_norm: float, ensemble: bool):
    """Scale gradients in place so each model's global norm is at most max_norm.

    The scale is min(1, max_norm / (norm + CLIP_EPS)), PyTorch's rule: a model whose norm
    is within CLIP_EPS of max_norm is scaled by a hair (norm == max_norm by 1 / (1 + 1e-6)).
    Returns the norms before scaling.
    """
    norms = grad_norms(grads, ensemble)
    scale = (max_norm / (norms + CLIP_EPS)).clip(max=1.0)
    for g in grads.values():
        g *= scale.reshape(scale.shape + (1,) * (g.ndim - scale.ndim)).astype(g.dtype)
    return norms
