"""Attention statistics (minicount/analysis/attention_stats.py): a designed model's weights on
0s, 1s, 2s and BOS, the measured weights against the exact score table, and positions."""

import math

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import attention_patterns, attention_stats, score_table
from minicount.analysis.attention_stats import exact_weights, measured_weights
from minicount.data import DataConfig, eval_set

from .designed import BOS_SINK, COUNT_VALUES, COUNTER, hand_built


def test_designed_attention_statistics(held_out):
    tokens, _, mask = held_out
    params, config = hand_built([COUNTER, BOS_SINK], [COUNT_VALUES, {}])
    stats = attention_stats(params, tokens, mask, config)
    assert stats["exact"]
    np.testing.assert_allclose(stats["per_query"]["w_01"][0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(stats["per_query"]["w_02"][0], math.exp(-25.0), rtol=1e-9)
    np.testing.assert_allclose(stats["w_01"][0], 1.0)
    # a query on a 0 or 1 sees itself, so the counter leaves BOS alone (a 2 after only 2s can't)
    assert max(stats["per_query"]["bos_weight"][0][:2]) < 1e-9
    assert stats["bos_weight"][1] > 1 - 1e-9  # the sink sees nothing else
    np.testing.assert_allclose(stats["measured"]["w_01"][0], 1.0, rtol=1e-9)
    A = attention_patterns(params, tokens, config)[0]
    np.testing.assert_allclose(A[:, 1, :, 0][mask], 1.0, atol=1e-12)  # all weight on BOS (key 0)


def test_measured_weights_equal_the_score_table_without_positions():
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 5).items()}
    tokens, _, mask = eval_set(DataConfig(max_len=10, n_eval=64))
    exact = exact_weights(score_table(params, config))
    measured = measured_weights(attention_patterns(params, tokens, config)[0], tokens, mask)
    for name in ("w_01", "w_02"):
        np.testing.assert_allclose(measured[name], exact[name], rtol=1e-9)


def test_score_table_refuses_positions():
    config = mc.ModelConfig(pos_emb=True)
    with pytest.raises(ValueError, match="positional"):
        score_table(mc.init_params(config, 0), config)


def test_measured_statistics_with_positions_are_reported():
    config = mc.ModelConfig(n_heads=2, pos_emb=True, n_ctx=20)
    params = mc.init_params(config, 0)
    tokens, _, mask = eval_set(DataConfig(max_len=8, n_eval=32))
    stats = attention_stats(params, tokens, mask, config)
    assert not stats["exact"] and np.all(np.isfinite(stats["w_01"]))
