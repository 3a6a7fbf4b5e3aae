"""Head semantics (minicount/analysis/semantics.py): how well each head's contribution alone
separates the classes, on designed models, and judged two-sided."""

import math

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import head_semantics
from minicount.analysis.semantics import two_sided
from minicount.data import BOS, EOS, ONE, TWO, ZERO, DataConfig, eval_set

from .designed import BIAS, BOS_SINK, COUNT_VALUES, COUNTER, SCALE, counts, hand_built, l_acc_of


def test_designed_semantics(held_out):
    tokens, targets, mask = held_out
    params, config = hand_built([COUNTER, BOS_SINK], [COUNT_VALUES, {BOS: 0.03}])
    params["unembed.b_U"][EOS] = BIAS - 3.0
    rows = head_semantics(params, tokens, targets, mask, config)
    lead, n01 = counts(tokens, mask)
    z = np.where(n01 > 0, lead / np.maximum(n01, 1), 0.0)
    assert rows[0]["auc_alone"] == 1.0 and rows[1]["auc_alone"] == 0.5
    assert rows[0]["solo"]["l_acc"] == pytest.approx(l_acc_of(SCALE * z - 4.0, tokens, mask))
    # as if both heads were copies of the counter: 200 z - 4 > 0 exactly when the 1s lead
    assert rows[0]["scaled"]["l_acc"] == 1.0 and rows[0]["scaled"]["s_acc"] == 1.0
    # two copies of the sink: the constant 6 - 4 > 0 says EOS everywhere
    y = (targets[..., EOS] > 0.5)[mask]
    assert rows[1]["scaled"]["l_acc"] == pytest.approx(y.mean())


def test_a_head_with_the_reversed_sign_is_semantic_with_sign_minus_one():
    """A counter head whose output is flipped: its contribution separates the classes with
    AUC near 0; judged two-sided it is semantic, with sign -1."""
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=1)
    p = {k: np.zeros(s) for k, s in mc.param_shapes(config).items()}
    p["embed.W_E"][:, :6] = np.eye(6)
    p["blocks.0.attn.W_Q"][:, :6, 0] = 1.0
    for h in range(2):  # both heads attend to 0s and 1s alike and read #1 - #0
        p["blocks.0.attn.W_K"][h, [ZERO, ONE, TWO, BOS], 0] = [5.0, 5.0, -20.0, -20.0]
        p["blocks.0.attn.W_V"][h, [ZERO, ONE], 0] = [-1.0, 1.0]
    p["blocks.0.attn.W_O"][0, 0, 6] = 1.0
    p["blocks.0.attn.W_O"][1, 0, 6] = -1.0  # head 1 writes the count with the reversed sign
    p["unembed.W_U"][6, EOS] = 100.0
    tokens, targets, mask = eval_set(DataConfig(max_len=10, n_eval=100))
    rows = head_semantics(p, tokens, targets, mask, config)
    assert rows[0]["auc_sign"] == 1 and rows[0]["auc_two_sided"] >= 0.9
    assert rows[1]["auc_alone"] <= 0.1
    assert rows[1]["auc_sign"] == -1 and rows[1]["auc_two_sided"] >= 0.9
    assert rows[1]["auc_two_sided"] == pytest.approx(1 - rows[1]["auc_alone"])
    assert two_sided(rows[1]["auc_alone"]) == (rows[1]["auc_two_sided"], -1)
    assert two_sided(None) == (None, None)
    nan_auc, sign = two_sided(float("nan"))  # one class absent: no direction
    assert math.isnan(nan_auc) and sign is None
