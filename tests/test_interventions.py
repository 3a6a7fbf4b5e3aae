"""Interventions (minicount/analysis/interventions.py): forcing attention weights and swapping
values change a designed model's metrics as predicted, and nothing else."""

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import attention_patterns, intervention_study
from minicount.analysis.attention_stats import measured_weights
from minicount.analysis.hooks import run_with_cache
from minicount.analysis.interventions import force_weight_hook, permute_values_hook
from minicount.data import BOS, ONE, TWO, ZERO

from .designed import BOS_SINK, COUNT_VALUES, COUNTER, SLOT, hand_built


def pattern_with_scores_hook(params, tokens, config, hook):
    """Layer 0's attention pattern [B, H, T, T] with hook applied to its attention scores."""
    _, cache = run_with_cache(
        params,
        tokens,
        config,
        ["blocks.0.attn.hook_pattern"],
        hooks={"blocks.0.attn.hook_attn_scores": hook},
    )
    return cache["blocks.0.attn.hook_pattern"]


def test_forcing_w01_repairs_an_unbalanced_counter(held_out):
    tokens, targets, mask = held_out
    tilted = {**COUNTER, ONE: 6.0}  # w_01 = e: 1s count more than 0s
    params, config = hand_built([tilted], [COUNT_VALUES])
    rows = {r["name"]: r for r in intervention_study(params, tokens, targets, mask, config)}
    assert rows["none"]["l_acc"] < 1.0
    assert rows["force_w01=1"]["l_acc"] == 1.0 and rows["force_w01=1"]["delta"]["l_acc"] > 0
    # the forced pattern has w_01 = 1 at every query, measured
    hook = force_weight_hook(tokens, 0, ZERO, ONE, 1.0)
    w = measured_weights(pattern_with_scores_hook(params, tokens, config, hook), tokens, mask)
    np.testing.assert_allclose(w["w_01"], 1.0, rtol=1e-9)


def test_forcing_w02_zero_removes_the_twos(held_out):
    tokens, _, mask = held_out
    config = mc.ModelConfig(n_heads=2, pos_emb=True, n_ctx=20)  # measured, not from a table
    params = mc.init_params(config, 3)
    hook = force_weight_hook(tokens, 1, ZERO, TWO, 0.0)
    A = pattern_with_scores_hook(params, tokens, config, hook)
    assert np.all(np.isfinite(A))
    has_other = np.cumsum(tokens != TWO, axis=1) > 0  # every query sees BOS
    on_twos = (A[:, 1] * (tokens == TWO)[:, None, :]).sum(-1)  # [B, T]
    assert np.all(on_twos[mask & has_other] == 0)


def test_interventions_that_change_nothing_change_no_metric(held_out):
    tokens, targets, mask = held_out
    # an ideal counter and a copy of it: forcing w_01 = 1 is a no-op, and so are the value edits
    params, config = hand_built([COUNTER, COUNTER], [COUNT_VALUES, COUNT_VALUES])
    rows = intervention_study(params, tokens, targets, mask, config)
    names = {r["name"] for r in rows}
    assert {"force_w01=1", "mean_values", "roll_values", "all_heads_ideal"} <= names
    for r in rows:
        if r["name"] in ("none", "force_w01=1", "mean_values", "roll_values"):
            assert r["delta"] == {"l_acc": 0.0, "s_acc": 0.0, "roc_auc": 0.0}, r
    identity = permute_values_hook([0, 1])
    logits, _ = run_with_cache(params, tokens, config, (), hooks={"blocks.0.attn.hook_v": identity})
    # (run_with_cache runs the fast attention path: compared on the same path, bit for bit)
    np.testing.assert_array_equal(logits, mc.forward(params, tokens, config, attention="fast"))


def test_swapping_values_trades_the_heads_outputs(held_out):
    tokens, _, _ = held_out
    params, config = hand_built([COUNTER, BOS_SINK], [COUNT_VALUES, {BOS: 0.5}])
    params["blocks.0.attn.W_O"][1, 0, SLOT] = 1.0
    swap = permute_values_hook([1, 0])
    _, cache = run_with_cache(
        params, tokens, config, ["blocks.0.attn.hook_z"], hooks={"blocks.0.attn.hook_v": swap}
    )
    z = cache["blocks.0.attn.hook_z"][..., 0]  # [B, H, T]
    A = attention_patterns(params, tokens, config)[0]  # [B, H, T, T], unchanged by the swap
    # the sink now reads the counter's value at BOS (0); the counter reads the sink's values,
    # which are 0.5 at BOS and 0 elsewhere
    np.testing.assert_allclose(z[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0], 0.5 * A[:, 0, :, 0], atol=1e-12)
    assert z[:, 0].max() == pytest.approx(0.5)  # "2..." prefixes: the counter falls back on BOS
