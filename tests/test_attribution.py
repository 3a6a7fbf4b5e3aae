"""Per-head attribution of the EOS logit (minicount/analysis/attribution.py): the parts add up
to the logits, inexact configs and ensembles are refused, and a designed model's heads
contribute what they were built to."""

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import attention_patterns, eos_contributions, head_logit_contributions
from minicount.data import BOS

from .designed import BIAS, BOS_SINK, COUNT_VALUES, COUNTER, SCALE, counts, hand_built


def test_contributions_add_up_to_the_logits():
    config = mc.ModelConfig(n_heads=3, pos_emb=True, n_ctx=20)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 3).items()}
    tokens, _, _ = mc.data.sample_batch(16, 12, np.random.default_rng(1))
    parts = head_logit_contributions(params, tokens, config)
    assert parts["heads"].shape == (3, 16, 13, 6) and parts["direct"].shape == (16, 13, 6)
    total = parts["heads"].sum(0) + parts["direct"] + parts["bias"]
    np.testing.assert_allclose(total, mc.forward(params, tokens, config), rtol=0, atol=1e-12)
    # the direct path is the embedding (token + position) read by W_U, without the bias
    x0 = params["embed.W_E"][tokens] + params["pos_embed.W_pos"][:13]
    np.testing.assert_allclose(parts["direct"], x0 @ params["unembed.W_U"], atol=1e-12)


def test_contributions_in_float32_add_up_to_rounding():
    config = mc.ModelConfig()
    params = mc.init_params(config, 0)
    tokens, _, _ = mc.data.sample_batch(8, 10, np.random.default_rng(0))
    parts = head_logit_contributions(params, tokens, config)
    total = parts["heads"].sum(0) + parts["direct"] + parts["bias"]
    np.testing.assert_allclose(total, mc.forward(params, tokens, config), atol=1e-4)


@pytest.mark.parametrize("change", [{"n_layers": 2}, {"layernorm": True}, {"mlp": True}])
def test_attribution_refuses_inexact_configs(change):
    config = mc.ModelConfig(**change)
    params = mc.init_params(config, 0)
    tokens = mc.data.encode("0121")[None]
    with pytest.raises(ValueError, match="exact"):
        head_logit_contributions(params, tokens, config)


def test_ensemble_params_are_refused():
    config = mc.ModelConfig()
    params = mc.init_ensemble(config, [0, 1])
    with pytest.raises(ValueError, match="single model"):
        attention_patterns(params, mc.data.encode("01")[None], config)


def test_designed_contributions(held_out):
    tokens, targets, mask = held_out
    params, config = hand_built([COUNTER, BOS_SINK], [COUNT_VALUES, {BOS: 0.03}])
    c, offset = eos_contributions(params, tokens, config)
    lead, n01 = counts(tokens, mask)
    expected = SCALE * np.where(n01 > 0, lead / np.maximum(n01, 1), 0.0)  # balanced count
    np.testing.assert_allclose(c[0][mask], expected[mask], atol=1e-6)
    np.testing.assert_allclose(c[1][mask], SCALE * 0.03, atol=1e-9)  # the sink's constant
    np.testing.assert_allclose(offset, BIAS)  # W_U reads nothing from the embedding
