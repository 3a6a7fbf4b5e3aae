"""TransformerLens in and out: a minicount model as a HookedTransformer, and back.

    model = to_hooked_transformer(params, config)    # transformer_lens.HookedTransformer
    logits, cache = model.run_with_cache(torch.from_numpy(tokens))
    params, config = from_hooked_transformer(model)  # the same dict minicount saves

Needs the optional extra ``pip install -e ".[lens]"`` (TransformerLens 3.x and PyTorch);
minicount itself never imports torch. TransformerLens 4 dropped HookedTransformer for
TransformerBridge, which wraps Hugging Face models loaded by name; docs/transformerlens.md
says what to do there.

The two projects already share their names and shapes for the weights (``embed.W_E``,
``blocks.0.attn.W_Q`` [n_heads, d_model, d_head], ...), so the conversion is a copy. What
the HookedTransformer gets:

- attention biases b_Q, b_K, b_V, b_O of zero (minicount's attention has none);
- LayerNorm ("LN", eps 1e-5, before attention, before the MLP and before the unembedding:
  the same pre-LN placement as minicount) or none (``normalization_type=None``);
- a ReLU MLP, or none (``attn_only=True``);
- positions: TransformerLens has no positional_embedding_type that adds nothing ("rotary",
  "alibi" and "shortformer" all change the attention scores), so a NoPE model gets
  "standard" positions with W_pos all zero, frozen (requires_grad False) so that training
  in TransformerLens keeps it NoPE. Coming back, a W_pos of exact zeros means NoPE;
- the same vocabulary (d_vocab 6, no tokenizer) and attention scale sqrt(d_head).

Activations. TransformerLens's layout differs from minicount's for some of the shared
hook names (``activation_as_minicount`` converts):

    name               minicount          TransformerLens
    hook_q, k, v, z    [B, H, T, d_head]   [B, T, H, d_head]
    hook_result        [B, H, T, d_model]  [B, T, H, d_model] (needs cfg.use_attn_result)
    hook_attn_scores   [B, H, T, T]        the same, but masked: -inf above the diagonal,
                                           where minicount keeps q·k
    hook_pattern       [B, H, T, T]        the same
    hook_embed         token only          token only
    hook_pos_embed     W_pos[:T]           W_pos[:T]
"""

from __future__ import annotations

import math
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from .backend import to_numpy
from .inputs import check_params
from .model import ModelConfig
from .names import ATTN_HOOKS, act_name, param_shapes

# head axis second in minicount, third in TransformerLens
_HEAD_THIRD = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result")
ATTN_BIASES = ("b_Q", "b_K", "b_V", "b_O")


def _import_lens():
    """(torch, transformer_lens), or an ImportError that says which extra to install."""
    try:
        import torch
        import transformer_lens
    except ImportError as e:
        raise ImportError(
            f"minicount.interop needs TransformerLens 3.x and PyTorch ({e}); install them "
            "with: pip install -e '.[lens]'"
        ) from e
    try:
        found = version("transformer-lens")
    except PackageNotFoundError:  # a source checkout: trust what it has
        found = "3 (no metadata)"
    if not hasattr(transformer_lens, "HookedTransformer") or not found.startswith(("2.", "3.")):
        raise ImportError(
            f"TransformerLens {found} has no HookedTransformer to build; minicount.interop "
            "targets 3.x: pip install 'transformer-lens>=3.9,<4' (docs/transformerlens.md)"
        )
    return torch, transformer_lens


def shared_hook_names(config: ModelConfig) -> list[str]:
    """The activation names that mean the same thing in both projects (up to layout):
    the token (and, with positions, positional) embedding, and per layer the residual
    stream before and after the block and every attention activation."""
    names = ["hook_embed"] + (["hook_pos_embed"] if config.pos_emb else [])
    for l in range(config.n_layers):
        names += [act_name("resid_pre", l)] + [act_name(h, l) for h in ATTN_HOOKS]
        names += [act_name("resid_post", l)]
    return names


def activation_as_minicount(name: str, activation) -> np.ndarray:
    """A TransformerLens activation (torch tensor) in minicount's layout, as a NumPy array.

    q, k, v, z [B, T, H, d_head] -> [B, H, T, d_head]; result [B, T, H, d_model] ->
    [B, H, T, d_model]; everything else keeps its shape. Masked scores stay masked.
    """
    a = activation.detach().cpu().numpy()
    if name.rsplit(".", 1)[-1] in _HEAD_THIRD:
        a = a.swapaxes(-3, -2)  # [B, T, H, d] -> [B, H, T, d]
    return a


def hooked_config(config: ModelConfig, device: str = "cpu"):
    """The transformer_lens.HookedTransformerConfig of a minicount config."""
    _, tl = _import_lens()
    return tl.HookedTransformerConfig(
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        d_head=config.d_head,
        d_mlp=config.d_mlp,  # kept by an attn_only model too, so that a round trip keeps it
        attn_only=not config.mlp,
        act_fn="relu" if config.mlp else None,
        n_ctx=config.n_ctx,
        d_vocab=config.d_vocab,
        d_vocab_out=config.d_vocab,
        normalization_type="LN" if config.layernorm else None,
        eps=1e-5,
        positional_embedding_type="standard",
        use_attn_scale=True,
        attn_scale=math.sqrt(config.d_head),
        use_attn_result=True,
        default_prepend_bos=False,  # minicount's tokens carry their own BOS
        attention_dir="causal",
        init_weights=False,
        device=device,
        dtype=_torch().float32,
    )


def _torch():
    return _import_lens()[0]


def to_hooked_transformer(params: dict, config: ModelConfig, device: str = "cpu"):
    """A transformer_lens.HookedTransformer that computes what minicount's ``forward`` does.

    params: one model (NumPy or CuPy arrays; an ensemble's member i is
    ``minicount.member(params, i)``). Its logits equal ``minicount.forward`` to
    float32 rounding, and its ``run_with_cache`` activations under ``shared_hook_names``
    equal minicount's hooks (after ``activation_as_minicount``; scores on and below the
    diagonal). ``cfg.use_attn_result`` is on, so ``hook_result`` and
    ``cache.stack_head_results`` work.
    """
    torch, tl = _import_lens()
    if check_params(params, config) is not None:
        raise ValueError(
            "to_hooked_transformer takes one model, got an ensemble; pass member i as "
            "minicount.member(params, i)"
        )
    with warnings.catch_warnings():  # 3.x warns that 4.0 drops HookedTransformer: we know
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = tl.HookedTransformer(hooked_config(config, device))
    state = model.state_dict()
    new = {
        name: torch.from_numpy(np.ascontiguousarray(to_numpy(params[name]), np.float32))
        for name in param_shapes(config)
    }
    for l in range(config.n_layers):
        p = f"blocks.{l}.attn."
        for b in ATTN_BIASES:
            new[p + b] = torch.zeros_like(state[p + b])
    if not config.pos_emb:
        new["pos_embed.W_pos"] = torch.zeros_like(state["pos_embed.W_pos"])
    expected = {n for n, _ in model.named_parameters()}
    if set(new) != expected:  # a TransformerLens release that lays the model out otherwise
        raise ValueError(
            "this TransformerLens lays the model out differently: missing "
            f"{sorted(expected - set(new))}, unexpected {sorted(set(new) - expected)}"
        )
    with torch.no_grad():
        for name, value in model.named_parameters():
            value.copy_(new[name].reshape(value.shape))
    if not config.pos_emb:
        model.pos_embed.W_pos.requires_grad_(False)
    return model.eval()


def from_hooked_transformer(model) -> tuple[dict, ModelConfig]:
    """(params, config) of a HookedTransformer that minicount can run; ValueError otherwise.

    minicount supports: causal attention with the sqrt(d_head) scale and zero attention
    biases, "standard" positions (all zero: NoPE), LayerNorm "LN" with eps 1e-5 or none, a
    ReLU MLP or none, d_vocab = d_vocab_out = 6. The error names everything else it found.
    """
    torch, _ = _import_lens()
    cfg = model.cfg
    state = {n: p.detach().cpu().to(torch.float32).numpy() for n, p in model.named_parameters()}
    problems = _unsupported(cfg, state)
    W_pos = state.get("pos_embed.W_pos")
    config = None
    if not problems:
        try:
            config = ModelConfig(
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                d_head=cfg.d_head,
                n_layers=cfg.n_layers,
                n_ctx=cfg.n_ctx,
                pos_emb=W_pos is not None and bool(W_pos.any()),
                layernorm=cfg.normalization_type == "LN",
                mlp=not cfg.attn_only,
                d_mlp=cfg.d_mlp if isinstance(cfg.d_mlp, int) else ModelConfig.d_mlp,
                d_vocab=cfg.d_vocab,
            )
        except ValueError as e:
            problems.append(str(e))
    if config is not None:
        shapes = param_shapes(config)
        ignored = {f"blocks.{l}.attn.{b}" for l in range(cfg.n_layers) for b in ATTN_BIASES}
        ignored |= set() if config.pos_emb else {"pos_embed.W_pos"}
        extra = sorted(set(state) - set(shapes) - ignored)
        missing = sorted(set(shapes) - set(state))
        if extra or missing:
            problems.append(f"parameters minicount has no place for {extra}, missing {missing}")
    if problems:
        raise ValueError("minicount cannot run this HookedTransformer: " + "; ".join(problems))
    params = {name: state[name].reshape(shape).copy() for name, shape in shapes.items()}
    return params, config


def _unsupported(cfg, state: dict) -> list[str]:
    """What in a HookedTransformer's config (and its attention biases) minicount cannot run."""
    problems = []

    def need(ok: bool, what: str):
        if not ok:
            problems.append(what)

    need(cfg.d_vocab == 6, f"d_vocab={cfg.d_vocab} (minicount's vocabulary has 6 tokens)")
    need(cfg.d_vocab_out == cfg.d_vocab, f"d_vocab_out={cfg.d_vocab_out} differs from d_vocab")
    need(
        cfg.positional_embedding_type == "standard",
        f"positional_embedding_type={cfg.positional_embedding_type!r} (only 'standard')",
    )
    need(
        cfg.normalization_type in (None, "LN"),
        f"normalization_type={cfg.normalization_type!r} (only 'LN' or None)",
    )
    need(
        cfg.normalization_type is None or abs(cfg.eps - 1e-5) < 1e-12,
        f"eps={cfg.eps} (minicount's LayerNorm uses 1e-5)",
    )
    need(
        cfg.attn_only or (cfg.act_fn == "relu" and not getattr(cfg, "gated_mlp", False)),
        f"act_fn={cfg.act_fn!r}"
        + (", gated_mlp" if getattr(cfg, "gated_mlp", False) else "")
        + " (only a plain ReLU MLP)",
    )
    need(cfg.attention_dir == "causal", f"attention_dir={cfg.attention_dir!r} (only 'causal')")
    scale = cfg.attn_scale if cfg.use_attn_scale else 1.0
    need(
        abs(scale - math.sqrt(cfg.d_head)) < 1e-6 and not cfg.scale_attn_by_inverse_layer_idx,
        f"attention scale {scale} (minicount divides by sqrt(d_head) = {math.sqrt(cfg.d_head)})",
    )
    for flag in ("parallel_attn_mlp", "final_rms", "use_local_attn", "use_attention_sinks"):
        need(not getattr(cfg, flag, False), f"{flag}=True")
    need(
        getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads),
        f"n_key_value_heads={getattr(cfg, 'n_key_value_heads', None)} (grouped-query attention)",
    )
    for l in range(cfg.n_layers):
        for b in ATTN_BIASES:
            name = f"blocks.{l}.attn.{b}"
            need(name not in state or not state[name].any(), f"{name} is not zero")
    return problems
