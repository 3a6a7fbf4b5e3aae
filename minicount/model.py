"""The transformer: config, parameters, and the full forward and backward pass.

Parameters are a plain dict keyed by TransformerLens names, the same keys as in a
checkpoint. A single model's arrays have the shapes in brackets below; an ensemble of M
models (see ``init_ensemble``) has the same keys with a leading [M] on every array, and
every function here works on both without a branch.

    embed.W_E            [V, d_model]
    pos_embed.W_pos      [n_ctx, d_model]                       (pos_emb=True)
    blocks.{l}.ln1.w/b   [d_model]                              (layernorm=True)
    blocks.{l}.attn.W_Q  [n_heads, d_model, d_head]   (W_K, W_V alike)
    blocks.{l}.attn.W_O  [n_heads, d_head, d_model]
    blocks.{l}.ln2.w/b   [d_model]                              (layernorm and mlp)
    blocks.{l}.mlp.W_in  [d_model, d_mlp], b_in [d_mlp]         (mlp=True)
    blocks.{l}.mlp.W_out [d_mlp, d_model], b_out [d_model]
    ln_final.w/b         [d_model]                              (layernorm=True)
    unembed.W_U          [d_model, V], unembed.b_U [V]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import layers
from .backend import array_module
from .data import V


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. Defaults: the one-layer, attention-only, NoPE model of the study."""

    d_model: int = 32  # width of the residual stream
    n_heads: int = 4  # attention heads per layer
    d_head: int = 8  # width of each head's query/key/value
    n_layers: int = 1  # transformer blocks
    n_ctx: int = 65  # longest sequence (BOS + 64 symbols); only binds with pos_emb
    pos_emb: bool = False  # learned positional embedding (default: none, "NoPE")
    layernorm: bool = False  # pre-LayerNorm in each block and before the unembedding
    mlp: bool = False  # a ReLU MLP after attention in each block
    d_mlp: int = 128  # hidden width of the MLP
    d_vocab: int = V  # 0, 1, 2, BOS, EOS, PAD

    def __post_init__(self):
        for name in ("d_model", "n_heads", "d_head", "n_layers", "n_ctx", "d_mlp", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("pos_emb", "layernorm", "mlp"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"ModelConfig.{name} must be True or False")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (for one model), in forward order."""
    c = config
    shapes = {"embed.W_E": (c.d_vocab, c.d_model)}
    if c.pos_emb:
        shapes["pos_embed.W_pos"] = (c.n_ctx, c.d_model)
    for l in range(c.n_layers):
        p = f"blocks.{l}."
        if c.layernorm:
            shapes[p + "ln1.w"] = shapes[p + "ln1.b"] = (c.d_model,)
        for W in ("W_Q", "W_K", "W_V"):
            shapes[p + "attn." + W] = (c.n_heads, c.d_model, c.d_head)
        shapes[p + "attn.W_O"] = (c.n_heads, c.d_head, c.d_model)
        if c.mlp:
            if c.layernorm:
                shapes[p + "ln2.w"] = shapes[p + "ln2.b"] = (c.d_model,)
            shapes[p + "mlp.W_in"] = (c.d_model, c.d_mlp)
            shapes[p + "mlp.b_in"] = (c.d_mlp,)
            shapes[p + "mlp.W_out"] = (c.d_mlp, c.d_model)
            shapes[p + "mlp.b_out"] = (c.d_model,)
    if c.layernorm:
        shapes["ln_final.w"] = shapes["ln_final.b"] = (c.d_model,)
    shapes["unembed.W_U"] = (c.d_model, c.d_vocab)
    shapes["unembed.b_U"] = (c.d_vocab,)
    return shapes


def _init_std(name: str, config: ModelConfig) -> float:
    """Scale of the initial weights: 1/sqrt(fan_in) for matrices, 1 for embeddings."""
    if name in ("embed.W_E", "pos_embed.W_pos"):
        return 1.0
    if name.endswith("attn.W_O"):
        return 1.0 / math.sqrt(config.n_heads * config.d_head)
    if name.endswith("mlp.W_out"):
        return 1.0 / math.sqrt(config.d_mlp)
    return 1.0 / math.sqrt(config.d_model)


def init_params(config: ModelConfig, seed: int = 0, xp=np, dtype=np.float32) -> dict:
    """Fresh parameters for one model, drawn on the host from ``seed`` and then moved to ``xp``.

    The same seed gives the same model on NumPy and CuPy (and in float32 or float64).
    """
    rng = np.random.default_rng([int(seed), 0])
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith((".b", "b_in", "b_out", "b_U")):
            value = np.zeros(shape)
        elif name.endswith(".w"):
            value = np.ones(shape)
        else:
            value = rng.standard_normal(shape) * _init_std(name, config)
        params[name] = xp.asarray(value.astype(dtype))
    return params


def init_ensemble(config: ModelConfig, seeds, xp=np, dtype=np.float32) -> dict:
    """M models stacked on a leading axis: member i is exactly ``init_params(config, seeds[i])``."""
    members = [init_params(config, s, np, dtype) for s in seeds]
    return {k: xp.asarray(np.stack([m[k] for m in members])) for k in members[0]}


def n_models(params: dict, config: ModelConfig) -> int | None:
    """M for an ensemble, None for a single model (read off the leading axis of W_E)."""
    W_E = params["embed.W_E"]
    return None if W_E.ndim == 2 else W_E.shape[0]


def _check_tokens(tokens, config: ModelConfig):
    xp = array_module(tokens)
    if tokens.ndim < 2:
        raise ValueError(f"tokens must be [B, T] (or [M, B, T]), got shape {tuple(tokens.shape)}")
    if not xp.issubdtype(tokens.dtype, xp.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= config.d_vocab):
        raise ValueError(f"token ids must lie in 0..{config.d_vocab - 1}")
    if config.pos_emb and tokens.shape[-1] > config.n_ctx:
        raise ValueError(f"sequence length {tokens.shape[-1]} exceeds n_ctx={config.n_ctx}")


def forward_with_cache(params: dict, tokens, config: ModelConfig, *, hooks=None):
    """The full forward pass. Returns logits [..., B, T, V] and a cache for ``backward``.

    ``hooks`` maps full activation names (e.g. ``blocks.0.attn.hook_pattern``) to functions
    applied in the forward pass; see layers/attention.py. Besides the attention hooks there
    are ``hook_embed`` and ``blocks.{l}.hook_resid_pre`` / ``hook_resid_post`` [..., B, T, d_model].
    """
    hooks = hooks or {}
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    c = config
    cache = {}
    x, cache["embed"] = layers.embedding_forward(tokens, params["embed.W_E"])  # [..., B, T, d]
    if c.pos_emb:
        x, cache["pos_embed"] = layers.pos_embedding_forward(x, params["pos_embed.W_pos"])
    x = hook("hook_embed", x)
    for l in range(c.n_layers):
        p = f"blocks.{l}."
        x = hook(p + "hook_resid_pre", x)
        h = x
        if c.layernorm:
            h, cache[p + "ln1"] = layers.layernorm_forward(x, params[p + "ln1.w"], params[p + "ln1.b"])
        attn_hooks = {k[len(p + "attn."):]: f for k, f in hooks.items() if k.startswith(p + "attn.")}
        attn_out, cache[p + "attn"] = layers.attention_forward(
            h, *(params[p + "attn." + W] for W in ("W_Q", "W_K", "W_V", "W_O")), hooks=attn_hooks
        )
        x = x + attn_out  # [..., B, T, d]
        if c.mlp:
            h = x
            if c.layernorm:
                h, cache[p + "ln2"] = layers.layernorm_forward(x, params[p + "ln2.w"], params[p + "ln2.b"])
            mlp_out, cache[p + "mlp"] = layers.mlp_forward(
                h, *(params[p + "mlp." + n] for n in ("W_in", "b_in", "W_out", "b_out"))
            )
            x = x + mlp_out
        x = hook(p + "hook_resid_post", x)
    if c.layernorm:
        x, cache["ln_final"] = layers.layernorm_forward(x, params["ln_final.w"], params["ln_final.b"])
    logits, cache["unembed"] = layers.unembed_forward(x, params["unembed.W_U"], params["unembed.b_U"])
    return logits, cache


def forward(params: dict, tokens, config: ModelConfig, *, hooks=None):
    """Logits [B, T, V] for tokens [B, T] (or [M, B, T, V] for an ensemble)."""
    _check_tokens(tokens, config)
    return forward_with_cache(params, tokens, config, hooks=hooks)[0]


def backward(dlogits, cache, config: ModelConfig, params: dict) -> dict:
    """Gradients of every parameter from dlogits [..., B, T, V], in reverse order of the forward."""
    c = config
    grads = {}
    dx, grads["unembed.W_U"], grads["unembed.b_U"] = layers.unembed_backward(dlogits, cache["unembed"])
    if c.layernorm:
        dx, grads["ln_final.w"], grads["ln_final.b"] = layers.layernorm_backward(dx, cache["ln_final"])
    for l in reversed(range(c.n_layers)):
        p = f"blocks.{l}."
        if c.mlp:
            # x = x + mlp(h): the residual passes dx through unchanged and the MLP adds to it
            dh, *dmlp = layers.mlp_backward(dx, cache[p + "mlp"])
            for n, g in zip(("W_in", "b_in", "W_out", "b_out"), dmlp):
                grads[p + "mlp." + n] = g
            if c.layernorm:
                dh, grads[p + "ln2.w"], grads[p + "ln2.b"] = layers.layernorm_backward(dh, cache[p + "ln2"])
            dx = dx + dh
        dh, *dattn = layers.attention_backward(dx, cache[p + "attn"])
        for n, g in zip(("W_Q", "W_K", "W_V", "W_O"), dattn):
            grads[p + "attn." + n] = g
        if c.layernorm:
            dh, grads[p + "ln1.w"], grads[p + "ln1.b"] = layers.layernorm_backward(dh, cache[p + "ln1"])
        dx = dx + dh
    if c.pos_emb:
        grads["pos_embed.W_pos"] = layers.pos_embedding_backward(dx, cache["pos_embed"])
    grads["embed.W_E"] = layers.embedding_backward(dx, cache["embed"])
    return {k: grads[k] for k in params}  # in the order of params


def loss_and_grads_all(params: dict, tokens, targets, mask, config: ModelConfig):
    """Per-model losses (an array: [] or [M]) and the gradient dict; the workhorse of training."""
    logits, cache = forward_with_cache(params, tokens, config)
    loss, loss_cache = layers.bce_with_logits_forward(logits, targets, mask)
    dlogits = layers.bce_with_logits_backward(1.0, loss_cache)
    return loss, backward(dlogits, cache, config, params)


def loss_and_grads(params: dict, tokens, targets, mask, config: ModelConfig):
    """(loss, grads): the mean BCE loss of SPEC §2 as a Python float, and d loss / d params.

    For an ensemble the loss returned is the sum of the members' losses, whose gradient
    with respect to member i's parameters is member i's own gradient.
    """
    _check_tokens(tokens, config)
    loss, grads = loss_and_grads_all(params, tokens, targets, mask, config)
    return float(loss.sum()), grads


def to_dtype(params: dict, dtype) -> dict:
    """A copy of params cast to dtype (e.g. float64 for gradient checks)."""
    return {k: v.astype(dtype) for k, v in params.items()}
