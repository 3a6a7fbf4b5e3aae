"""The checks of the model's inputs against a ModelConfig, each refusing with a one-line
ValueError that names what is wrong: parameters, tokens, targets, masks and hooks, for
``model.forward``, ``loss_and_grads``, ``metrics.evaluate``, checkpoints and the
TransformerLens bridge. Downstream of these the arrays are trusted.

It touches nothing: every function reads its arguments and returns them (converted) or
raises. It imports only NumPy, minicount.backend and minicount.names (the parameter shapes
and hook names of a config), so that the model and everything beside it may import it.
"""

from __future__ import annotations

import numpy as np

from .backend import device_of
from .names import hook_names, n_members, param_shapes


def check_params(params: dict, config) -> int | None:
    """Check params against config; returns M for an ensemble, None for one model.

    Every name of ``param_shapes(config)`` must be there (and nothing else), each a floating
    array of its shape, or of [M, *shape] with the same M for all, all on one device.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of arrays, got {type(params).__name__}")
    expected = param_shapes(config)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"params do not match the config: missing {missing}, unexpected {extra}")
    leading, devices = set(), set()
    for name, shape in expected.items():
        a = params[name]
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise ValueError(f"params[{name!r}] must be an array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"params[{name!r}] must be floating point, got dtype {a.dtype}")
        lead = a.ndim - len(shape)
        if lead not in (0, 1) or tuple(a.shape[lead:]) != shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(a.shape)}; the config needs "
                f"{shape} (or [M, *{shape}] for an ensemble)"
            )
        leading.add(tuple(a.shape[:lead]))
        devices.add(device_of(a))
    if len(leading) > 1:
        raise ValueError(
            f"params disagree on the model axis: leading axes {sorted(leading)} "
            "(one model: none; an ensemble of M: [M] on every array)"
        )
    if len(devices) > 1:
        raise ValueError("params are spread over cpu and gpu: move them with backend.to_device")
    (lead,) = leading
    return lead[0] if lead else None


def check_tokens(tokens, config, params: dict | None = None):
    """tokens as an array [..., B, T] of ids in 0..d_vocab-1 on the params' device.

    Ids are range-checked because an out-of-range id would not fail later: it would give an
    all-zero one-hot row (and CuPy indexing wraps instead of raising).
    """
    if not hasattr(tokens, "dtype"):
        try:
            tokens = np.asarray(tokens)
        except (TypeError, ValueError):
            raise ValueError("tokens must be an integer array [B, T]") from None
    if tokens.ndim < 2 or tokens.size == 0:
        raise ValueError(
            f"tokens must be [B, T] (or [M, B, T]) with B, T >= 1, got shape {tuple(tokens.shape)}"
        )
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= config.d_vocab:
        raise ValueError(f"token ids must lie in 0..{config.d_vocab - 1}, got {lo}..{hi}")
    if config.pos_emb and tokens.shape[-1] > config.n_ctx:
        raise ValueError(f"sequence length {tokens.shape[-1]} exceeds n_ctx={config.n_ctx}")
    if params is not None:
        M = check_params(params, config)
        if M is not None and tokens.ndim > 2 and tokens.shape[:-2] != (M,):
            raise ValueError(
                f"tokens {tuple(tokens.shape)} for an ensemble of {M} must be "
                f"[B, T] (shared) or [{M}, B, T]"
            )
        if device_of(tokens) != device_of(params["embed.W_E"]):
            raise ValueError(
                f"tokens are on the {device_of(tokens)} but params on the "
                f"{device_of(params['embed.W_E'])}: move them with backend.to_device"
            )
    return tokens


def check_hooks(hooks, config) -> dict:
    """hooks as a dict of callables under known names (a misspelt one would do nothing)."""
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise ValueError(f"hooks must be a dict {{name: fn}}, got {type(hooks).__name__}")
    unknown = sorted(set(hooks) - set(hook_names(config)))
    if unknown:
        raise ValueError(f"unknown hook names {unknown}; see model.hook_names(config)")
    for name, fn in hooks.items():
        if not callable(fn):
            raise ValueError(f"hook {name!r} must be a function activation -> activation")
    return {name: _shape_checked(name, fn) for name, fn in hooks.items()}


def _shape_checked(name: str, fn):
    """fn, refusing (ValueError naming the hook) a result that is not an array of its input's
    shape: a wrong one would surface later as NumPy's broadcasting words, or not at all."""

    def hook(a):
        out = fn(a)
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(a.shape):
            got = f"shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"hook {name!r} must return an array of its input's shape "
                f"{tuple(a.shape)}, got {got}"
            )
        return out

    return hook


def check_targets(targets, mask, tokens, params: dict, config):
    """Check targets [..., B, T, V] (in [0, 1]) and mask [..., B, T] (bool, some True)."""
    B, T = tokens.shape[-2:]
    M = n_members(params)
    leads = {(), tuple(tokens.shape[:-2])} | ({(M,)} if M else set())
    for name, a, tail in (("targets", targets, (B, T, config.d_vocab)), ("mask", mask, (B, T))):
        lead = a.ndim - len(tail) if hasattr(a, "dtype") else -1
        if lead < 0 or tuple(a.shape[lead:]) != tail or tuple(a.shape[:lead]) not in leads:
            shape = tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
            raise ValueError(
                f"{name} must be an array [..., {', '.join(map(str, tail))}] "
                f"to go with tokens {tuple(tokens.shape)}, got {shape}"
            )
        if device_of(a) != device_of(tokens):
            raise ValueError(
                f"{name} is on the {device_of(a)} but tokens are on the {device_of(tokens)}"
            )
    if not np.issubdtype(targets.dtype, np.floating):
        raise ValueError(f"targets must be floating point, got dtype {targets.dtype}")
    if not (float(targets.min()) >= 0.0 and float(targets.max()) <= 1.0):
        raise ValueError("targets must lie in [0, 1] (and not be NaN)")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool (True at real positions), got dtype {mask.dtype}")
    if not bool(mask.any(axis=(-2, -1)).all()):
        raise ValueError("mask marks no real position: the loss would be 0/0")


def check_batch(tokens, targets, mask, params: dict, config) -> None:
    """ValueError saying what is wrong if tokens [..., B, T], targets [..., B, T, V] and mask
    [..., B, T] (host arrays) do not make a batch for params."""
    tokens = check_tokens(tokens, config)
    check_targets(targets, mask, tokens, params, config)
