"""Hand-built models whose answers are known in advance, for the tests of the analysis
instruments (test_attribution, test_attention_stats, test_ablation, test_semantics,
test_aggregation, test_interventions, test_analyze).

The hand-built model (float64, d_model 8, d_head 1) has one-hot token embeddings in
dimensions 0..5, writes its heads into dimension 6 and reads the EOS logit from there:

    EOS logit = 100 * (Σ_h z_h) - 1,   z_h = Σ_j pattern_h[t, j] * value(token_j)

With every query token given the same query, head h's score for a key is W_K[h][token, 0],
so the attention of each head is designed key by key.
"""

import numpy as np

import minicount as mc
from minicount.data import BOS, EOS, ONE, TWO, ZERO

D_MODEL, SLOT, SCALE, BIAS = 8, 6, 100.0, -1.0
COUNTER = {ZERO: 5.0, ONE: 5.0, TWO: -20.0, BOS: -20.0}  # attends to 0s and 1s alike
BOS_SINK = {BOS: 100.0}  # attends only to BOS
COUNT_VALUES = {ZERO: -1.0, ONE: 1.0}


def hand_built(keys, values, *, n_heads=None):
    """A one-layer model whose head h has key scores keys[h] and values values[h] per token."""
    H = n_heads or len(keys)
    config = mc.ModelConfig(d_model=D_MODEL, n_heads=H, d_head=1)
    p = {k: np.zeros(s) for k, s in mc.param_shapes(config).items()}
    p["embed.W_E"][:, :6] = np.eye(6)
    for h in range(H):
        p["blocks.0.attn.W_Q"][h, :6, 0] = 1.0
        for tok, s in keys[h].items():
            p["blocks.0.attn.W_K"][h, tok, 0] = s
        for tok, v in values[h].items():
            p["blocks.0.attn.W_V"][h, tok, 0] = v
        p["blocks.0.attn.W_O"][h, 0, SLOT] = 1.0
    p["unembed.W_U"][SLOT, EOS] = SCALE
    p["unembed.b_U"][EOS] = BIAS
    return p, config


def counts(tokens, mask):
    """#1 - #0 and #0 + #1 of every prefix, by brute force over the token ids. [B, T] each."""
    real = np.asarray(mask)
    ones = np.cumsum((tokens == ONE) & real, axis=1)
    zeros = np.cumsum((tokens == ZERO) & real, axis=1)
    return ones - zeros, ones + zeros


def l_acc_of(decisions, tokens, mask):
    lead, _ = counts(tokens, mask)
    return float(((decisions > 0) == (lead > 0))[mask].mean())
