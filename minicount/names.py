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
it is. ``param_name`` does the same for the parameter dict (``model.param_shapes``).

Pure string building; nothing else.
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
