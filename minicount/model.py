"""The transformer: config, parameters, and the full forward and backward pass.

Parameters are a plain dict keyed by TransformerLens names, the same keys as in a
checkpoint. A single model's arrays have the shapes in brackets below; an ensemble of M
models (see ``init_ensemble``) has the same keys with a leading [M] on every array, and
every function here works on both without a branch. ``member``, ``members``, ``stack`` and
``n_members`` take an ensemble apart into single models and put them back together.

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

Names are built by minicount.names (``param_name("W_Q", layer=0)``, ``act_name("pattern",
layer=0)``), as TransformerLens spells them.

Which attention runs. Every function here that runs the forward pass takes
``attention=``, a key of ATTENTION: "textbook" (the default: layers/attention.py, the
version to read), "fast" (fast/attention.py) or "fused" (fast/attention_cuda.py, its core
one CUDA kernel where it can run). All three give the same numbers up to rounding
(tests/test_fast_paths.py); training picks one with ``TrainConfig.path``.

What callers hand in (parameters, tokens, targets, masks, hooks) is checked by
minicount/inputs.py; this module computes and touches nothing but the arrays it is given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import layers, limits
from .backend import array_module
from .checks import check_bool, check_choice, check_int
from .data import V
from .fast import attention as fast_attention
from .fast import attention_cuda
from .inputs import check_hooks, check_targets, check_tokens
from .names import (
    ATTN_HOOKS,
    act_name,
    attn_hook,
    block,
    hook_names,  # noqa: F401 (model.hook_names, as before: names.py has it now)
    n_members,
    param_name,
    param_shapes,
)


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
            check_int(f"ModelConfig.{name}", getattr(self, name), 1)
        for name in ("pos_emb", "layernorm", "mlp"):
            check_bool(f"ModelConfig.{name}", getattr(self, name))
        if self.d_vocab != V:
            raise ValueError(
                f"ModelConfig.d_vocab must be {V} (the Count01 tokens 0, 1, 2, BOS, EOS, PAD), "
                f"got {self.d_vocab}"
            )
        limits.check_model(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a ModelConfig must be a dict of fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)


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
    seeds = list(seeds)
    if not seeds:
        raise ValueError("an ensemble needs at least one seed, got none")
    return stack([init_params(config, s, np, dtype) for s in seeds], xp=xp)


def member(params: dict, i: int) -> dict:
    """Member i of an ensemble as a single model: ``{k: v[i] for k, v in params.items()}``
    (views of the ensemble's arrays, on its device)."""
    M = n_members(params)
    if M is None:
        raise ValueError("member() takes an ensemble (a leading model axis); got a single model")
    if not -M <= i < M:
        raise ValueError(f"member {i}: the ensemble holds {M} model(s)")
    return {k: v[i] for k, v in params.items()}


def members(params: dict) -> list[dict]:
    """Every member of an ensemble as a single model; a single model is a list of one."""
    M = n_members(params)
    return [params] if M is None else [member(params, i) for i in range(M)]


def stack(models: list[dict], xp=None) -> dict:
    """Single models (same names, same shapes) as one ensemble: each array gets a leading
    model axis, member i being models[i]. Stacked on the models' own array module (NumPy or
    CuPy), then passed through ``xp.asarray`` when xp is given (xp=cupy moves host models to
    the GPU). ``member(stack(ms), i)`` equals ms[i]."""
    models = list(models)
    if not models:
        raise ValueError("stack needs at least one model, got none")
    first = models[0]
    for i, m in enumerate(models[1:], 1):
        if m.keys() != first.keys():
            odd = sorted(m.keys() ^ first.keys())
            raise ValueError(f"stack: model {i} and model 0 differ in parameter names {odd}")
        for k in first:
            if m[k].shape != first[k].shape:
                raise ValueError(
                    f"stack: {k} is {tuple(m[k].shape)} in model {i} "
                    f"but {tuple(first[k].shape)} in model 0"
                )
    module = array_module(*first.values())
    out = {k: module.stack([m[k] for m in models]) for k in first}
    return out if xp is None else {k: xp.asarray(v) for k, v in out.items()}


# attention path -> (forward, backward): the same computation, three implementations
ATTENTION = {
    "textbook": (layers.attention_forward, layers.attention_backward),
    "fast": (fast_attention.attention_forward, fast_attention.attention_backward),
    "fused": (attention_cuda.attention_forward, attention_cuda.attention_backward),
}


def check_attention(attention: str) -> str:
    """attention itself if it names a path of ATTENTION, else a ValueError listing them."""
    return check_choice("attention", attention, ATTENTION)


def _embed_forward(params: dict, tokens, config: ModelConfig, hook, cache: dict):
    """The residual stream's start: token embedding (+ positional embedding) [..., B, T, d]."""
    x, cache["embed"] = layers.embedding_forward(tokens, params[param_name("W_E")])
    x = hook(act_name("embed"), x)  # [..., B, T, d_model]
    if config.pos_emb:
        pos, cache["pos_embed"] = layers.pos_embedding_forward(tokens, params[param_name("W_pos")])
        x = x + hook(act_name("pos_embed"), pos)  # [..., B, T, d_model]
    return x


def _block_forward(params: dict, x, l: int, config: ModelConfig, hooks: dict, cache, attention):
    """Block l: x + attention(ln1(x)), then + mlp(ln2(x)) with an MLP; [..., B, T, d] -> same."""
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    p, W = block(l), lambda name: params[param_name(name, l)]  # noqa: E731
    x = hook(act_name("resid_pre", l), x)
    h = x
    if config.layernorm:
        h, cache[p + "ln1"] = layers.layernorm_forward(x, W("ln1.w"), W("ln1.b"))
    attn_hooks = {
        attn_hook(n): hooks[act_name(n, l)] for n in ATTN_HOOKS if act_name(n, l) in hooks
    }
    attention_forward = ATTENTION[attention][0]
    attn_out, cache[p + "attn"] = attention_forward(
        h, W("W_Q"), W("W_K"), W("W_V"), W("W_O"), hooks=attn_hooks
    )
    x = x + attn_out  # [..., B, T, d_model]
    if config.mlp:
        h = x
        if config.layernorm:
            h, cache[p + "ln2"] = layers.layernorm_forward(x, W("ln2.w"), W("ln2.b"))
        mlp_out, cache[p + "mlp"] = layers.mlp_forward(
            h, W("W_in"), W("b_in"), W("W_out"), W("b_out")
        )
        x = x + mlp_out  # [..., B, T, d_model]
    return hook(act_name("resid_post", l), x)


def forward_with_cache(
    params: dict, tokens, config: ModelConfig, *, hooks=None, check=True, attention="textbook"
):
    """The full forward pass. Returns logits [..., B, T, V] and a cache for ``backward``.

    ``hooks`` maps full activation names (e.g. ``blocks.0.attn.hook_pattern``) to functions
    applied in the forward pass; see layers/attention.py. Besides the attention hooks there
    are ``hook_embed``, ``hook_pos_embed`` (with pos_emb) and ``blocks.{l}.hook_resid_pre`` /
    ``hook_resid_post`` [..., B, T, d_model] (all names: ``hook_names(config)``).
    ``check=False`` skips the input checks (the training loop, whose batches are drawn by
    minicount itself). ``attention`` names the implementation (a key of ATTENTION); the
    cache records it, so that ``backward`` takes the matching one.
    """
    if check:
        tokens = check_tokens(tokens, config, params)
        hooks = check_hooks(hooks, config)
    hooks = hooks or {}
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    cache = {"attention": check_attention(attention)}
    x = _embed_forward(params, tokens, config, hook, cache)  # [..., B, T, d_model]
    for l in range(config.n_layers):
        x = _block_forward(params, x, l, config, hooks, cache, attention)
    if config.layernorm:
        x, cache["ln_final"] = layers.layernorm_forward(
            x, params["ln_final.w"], params["ln_final.b"]
        )
    logits, cache["unembed"] = layers.unembed_forward(
        x, params[param_name("W_U")], params[param_name("b_U")]
    )  # [..., B, T, V]
    return logits, cache


def forward(params: dict, tokens, config: ModelConfig, *, hooks=None, attention="textbook"):
    """Logits [B, T, V] for tokens [B, T] (or [M, B, T, V] for an ensemble)."""
    return forward_with_cache(params, tokens, config, hooks=hooks, attention=attention)[0]


def _block_backward(dx, l: int, config: ModelConfig, cache: dict, grads: dict):
    """Block l's parameter gradients into grads; returns d(its input) from dx [..., B, T, d]."""
    p, G = block(l), lambda name: param_name(name, l)  # noqa: E731
    if config.mlp:
        # x = x + mlp(h): the residual passes dx through unchanged and the MLP adds to it
        dh, *dmlp = layers.mlp_backward(dx, cache[p + "mlp"])
        for n, g in zip(("W_in", "b_in", "W_out", "b_out"), dmlp, strict=True):
            grads[G(n)] = g
        if config.layernorm:
            dh, grads[G("ln2.w")], grads[G("ln2.b")] = layers.layernorm_backward(
                dh, cache[p + "ln2"]
            )
        dx = dx + dh
    # x = x + attention(h), by the implementation the forward used
    attention_backward = ATTENTION[cache["attention"]][1]
    dh, *dattn = attention_backward(dx, cache[p + "attn"])
    for n, g in zip(("W_Q", "W_K", "W_V", "W_O"), dattn, strict=True):
        grads[G(n)] = g
    if config.layernorm:
        dh, grads[G("ln1.w")], grads[G("ln1.b")] = layers.layernorm_backward(dh, cache[p + "ln1"])
    return dx + dh


def backward(dlogits, cache, config: ModelConfig, params: dict) -> dict:
    """Gradients of every parameter from dlogits [..., B, T, V], in reverse order of the forward."""
    grads = {}
    dx, grads[param_name("W_U")], grads[param_name("b_U")] = layers.unembed_backward(
        dlogits, cache["unembed"]
    )
    if config.layernorm:
        dx, grads["ln_final.w"], grads["ln_final.b"] = layers.layernorm_backward(
            dx, cache["ln_final"]
        )
    for l in reversed(range(config.n_layers)):
        dx = _block_backward(dx, l, config, cache, grads)
    # x = embed + pos_embed: both receive dx
    if config.pos_emb:
        grads[param_name("W_pos")] = layers.pos_embedding_backward(dx, cache["pos_embed"])
    grads[param_name("W_E")] = layers.embedding_backward(dx, cache["embed"])
    return {k: grads[k] for k in params}  # in the order of params


def loss_and_grads_all(
    params: dict, tokens, targets, mask, config: ModelConfig, *, attention="textbook"
):
    """Per-model losses (an array: [] or [M]) and the gradient dict: the textbook training
    step, the whole batch at once (fast/train_step.py is its fast path).

    No input checks (``loss_and_grads`` is the checked entry point).
    """
    logits, cache = forward_with_cache(params, tokens, config, check=False, attention=attention)
    loss, loss_cache = layers.bce_with_logits_forward(logits, targets, mask)
    dlogits = layers.bce_with_logits_backward(1.0, loss_cache)
    return loss, backward(dlogits, cache, config, params)


def loss_and_grads(
    params: dict, tokens, targets, mask, config: ModelConfig, *, attention="textbook"
):
    """(loss, grads): the mean BCE loss of docs/method.md §2 as a Python float, and
    d loss / d params.

    For an ensemble the loss returned is the sum of the members' losses, whose gradient
    with respect to member i's parameters is member i's own gradient.
    """
    tokens = check_tokens(tokens, config, params)
    check_targets(targets, mask, tokens, params, config)
    loss, grads = loss_and_grads_all(params, tokens, targets, mask, config, attention=attention)
    return float(loss.sum()), grads
