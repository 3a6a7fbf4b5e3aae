"""Attention patterns (minicount/analysis/patterns.py): their shape, rows that sum to one, and
causality."""

import numpy as np

import minicount as mc
from minicount.analysis import attention_patterns


def test_patterns_shape_rows_and_causality():
    config = mc.ModelConfig(n_layers=2, n_heads=3, layernorm=True)
    params = mc.init_params(config, 1)
    tokens, _, _ = mc.data.sample_batch(5, 9, np.random.default_rng(2))
    A = attention_patterns(params, tokens, config)
    T = tokens.shape[1]
    assert A.shape == (2, 5, 3, T, T)
    np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-5)
    assert np.all(A[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
