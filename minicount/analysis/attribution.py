"""Direct logit attribution for a one-layer, attention-only model (docs/method.md §4).

With one layer, no MLP and no LayerNorm, the logits are a sum of independent paths:

    logits = x0 @ W_U  +  Σ_h result_h @ W_U  +  b_U
             (direct)     (heads)               (bias)

where x0 = W_E[tokens] (+ W_pos) is the embedding and result_h = z_h @ W_O[h] is head h's
output. The EOS column of head h's path is its contribution c_h(t) to the EOS score.
For any other architecture the split is not exact and these functions refuse.

Pure array code: reads its inputs, returns new arrays and dicts.
"""

from __future__ import annotations

from ..data import EOS
from ..names import act_name
from .hooks import check_single, run_with_cache

RESULT = act_name("result", 0)
RESID_PRE = act_name("resid_pre", 0)


def exactness_problem(config) -> str | None:
    """Why the direct decomposition is not exact for ``config``, or None when it is."""
    reasons = []
    if config.n_layers != 1:
        reasons.append(f"n_layers={config.n_layers} (heads of later layers read earlier heads)")
    if config.layernorm:
        reasons.append("layernorm=True (LayerNorm is not linear)")
    if config.mlp:
        reasons.append("mlp=True (the MLP is not linear)")
    if not reasons:
        return None
    return (
        "direct logit attribution is exact only for one-layer attention-only models "
        "without LayerNorm; this config has " + ", ".join(reasons)
    )


def check_exact(config) -> None:
    """Raise ValueError when the decomposition would not add up to the logits."""
    problem = exactness_problem(config)
    if problem is not None:
        raise ValueError(problem)


def head_logit_contributions(params: dict, tokens, config) -> dict:
    """Split the logits into the paths of a one-layer attention-only model.

    params: one model (no model axis); tokens [B, T].
    Returns a dict of arrays (on the parameters' device):
        "heads"  [n_heads, B, T, V]  head h's output through the unembedding, result_h @ W_U
        "direct" [B, T, V]           the embedding path x0 @ W_U (token + positional
                                     embedding), *without* the bias
        "bias"   [V]                 b_U
        "logits" [B, T, V]           the model's logits, = heads.sum(0) + direct + bias
    Raises ValueError for configs where the split is not exact (n_layers > 1, layernorm, mlp).
    """
    check_single(params)
    check_exact(config)
    logits, cache = run_with_cache(params, tokens, config, (RESULT, RESID_PRE))
    W_U = params["unembed.W_U"]  # [d_model, V]
    result = cache[RESULT]  # [B, H, T, d_model]
    heads = (result @ W_U).transpose(1, 0, 2, 3)  # [B, H, T, V] -> [H, B, T, V]
    direct = cache[RESID_PRE] @ W_U  # [B, T, d_model] @ [d_model, V] -> [B, T, V]
    return {"heads": heads, "direct": direct, "bias": params["unembed.b_U"], "logits": logits}


def eos_contributions(params: dict, tokens, config):
    """(c [n_heads, B, T], offset [B, T]): each head's EOS contribution and the rest of the score.

    offset = direct path + b_U[EOS], so that logits[..., EOS] = c.sum(0) + offset exactly.
    """
    parts = head_logit_contributions(params, tokens, config)
    c = parts["heads"][..., EOS]  # [H, B, T]
    offset = parts["direct"][..., EOS] + parts["bias"][EOS]  # [B, T]
    return c, offset
