"""Full names of activations (hook points) and parameters, built in one place.

The names follow TransformerLens, so that a reader can move between the two projects:

    act_name("pattern", layer=0)    -> "blocks.0.attn.hook_pattern"
    act_name("resid_pre", layer=1)  -> "blocks.1.hook_resid_pre"
    act_name("embed")               -> "hook_embed"
    param_name("W_Q", layer=0)      -> "blocks.0.attn.W_Q"
    param_name("ln1.w", layer=0)    -> "blocks.0.ln1.w"
    param_name("W_E")               -> "embed.W_E"

``act_name`` is modelled on TransformerLens's ``utils.get_act_name``: a short name gets its
sub-module (``attn.`` for q, k, v, attn_scores, pattern, z, result) and ``hook_`` in
front; a name that is already full (it has a dot or starts with ``hook_``) comes back as
it is. ``param_name`` does the same for the parameter dict (``param_shapes`` below).

Also the names and shapes a config gives a model: ``param_shapes(config)`` (every parameter,
in forward order), ``hook_names(config)`` (every hook point) and ``n_members(params)`` (M of
an ensemble, None for one model), so that inputs.py can check inputs without importing the
model. Pure: strings and shapes from a config (any object with ModelConfig's fields),
nothing else; it imports nothing of minicount.
"""

from __future__ import annotations

# activations inside the attention layer, in the order the forward pass makes them
ATTN_HOOKS = ("q", "k", "v", "attn_scores", "pattern", "z", "result")
# TransformerLens's aliases, kept so that its spellings work here too
_ACT_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "query": "q", "key": "k",
                "value": "v"}  # fmt: skip
# the module each parameter of a block or of the whole model lives in
_BLOCK_PARAMS = {
    "W_Q": "attn", "W_K": "attn", "W_V": "attn", "W_O": "attn",
    "W_in": "mlp", "b_in": "mlp", "W_out": "mlp", "b_out": "mlp",
}  # fmt: skip
_MODEL_PARAMS = {"W_E": "embed", "W_pos": "pos_embed", "W_U": "unembed", "b_U": "unembed"}


def block(layer: int) -> str:
    """The prefix of everything in block ``layer``: 'blocks.0.'."""
    return f"blocks.{int(layer)}."


def act_name(name: str, layer: int | None = None) -> str:
    """The full hook name of an activation: act_name('z', 0) -> 'blocks.0.attn.hook_z'.

    Without a layer the name is a model-level one ('embed', 'pos_embed'); a name that is
    already full is returned unchanged.
    """
    if layer is None and ("." in name or name.startswith("hook_")):
        return name
    name = _ACT_ALIASES.get(name, name)
    prefix = "" if layer is None else block(layer)
    if name in ATTN_HOOKS:
        if layer is None:
            raise ValueError(f"the attention activation {name!r} needs a layer")
        prefix += "attn."
    return f"{prefix}hook_{name}"


def attn_hook(name: str) -> str:
    """The name a hook has inside the attention layer: 'pattern' -> 'hook_pattern'."""
    return f"hook_{_ACT_ALIASES.get(name, name)}"


def param_name(name: str, layer: int | None = None) -> str:
    """The full key of a parameter: param_name('W_O', 0) -> 'blocks.0.attn.W_O'.

    In a block: W_Q, W_K, W_V, W_O, W_in, b_in, W_out, b_out, and 'ln1.w', 'ln2.b' as they
    are. Outside: W_E, W_pos, W_U, b_U, and 'ln_final.w' / 'ln_final.b' as they are.
    """
    if layer is not None:
        module = _BLOCK_PARAMS.get(name)
        return block(layer) + (f"{module}.{name}" if module else name)
    module = _MODEL_PARAMS.get(name)
    return f"{module}.{name}" if module else name


# ---------------------------------------------------------------------- every name of a model


def _block_shapes(c) -> dict[str, tuple[int, ...]]:
    """The parameters of one block, by short name (param_name(name, layer) makes them full)."""
    shapes = {}
    if c.layernorm:
        shapes["ln1.w"] = shapes["ln1.b"] = (c.d_model,)
    for W in ("W_Q", "W_K", "W_V"):
        shapes[W] = (c.n_heads, c.d_model, c.d_head)
    shapes["W_O"] = (c.n_heads, c.d_head, c.d_model)
    if c.mlp:
        if c.layernorm:
            shapes["ln2.w"] = shapes["ln2.b"] = (c.d_model,)
        shapes |= {"W_in": (c.d_model, c.d_mlp), "b_in": (c.d_mlp,),
                   "W_out": (c.d_mlp, c.d_model), "b_out": (c.d_model,)}  # fmt: skip
    return shapes


def param_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape (for one model), in forward order."""
    c = config
    shapes = {param_name("W_E"): (c.d_vocab, c.d_model)}
    if c.pos_emb:
        shapes[param_name("W_pos")] = (c.n_ctx, c.d_model)
    for l in range(c.n_layers):
        shapes |= {param_name(n, l): shape for n, shape in _block_shapes(c).items()}
    if c.layernorm:
        shapes["ln_final.w"] = shapes["ln_final.b"] = (c.d_model,)
    shapes[param_name("W_U")] = (c.d_model, c.d_vocab)
    shapes[param_name("b_U")] = (c.d_vocab,)
    return shapes


def n_members(params: dict) -> int | None:
    """M for an ensemble, None for a single model (read off the leading axis of W_E)."""
    W_E = params["embed.W_E"]
    return None if W_E.ndim == 2 else W_E.shape[0]


def hook_names(config) -> list[str]:
    """Every activation name that ``forward(..., hooks=...)`` accepts, in forward order.

    hook_embed is the token embedding and hook_pos_embed (with pos_emb) the positional
    embedding's part; block 0's hook_resid_pre is their sum.
    """
    names = [act_name("embed")] + ([act_name("pos_embed")] if config.pos_emb else [])
    for l in range(config.n_layers):
        names += [act_name("resid_pre", l)] + [act_name(h, l) for h in ATTN_HOOKS]
        names += [act_name("resid_post", l)]
    return names
