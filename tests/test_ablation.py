"""Ablation (minicount/analysis/ablation.py): zero and mean ablation of heads and of every
subset of heads, on designed models and against the hooked forward pass."""

from itertools import combinations

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import (
    ablated_logits,
    ablation_study,
    head_logit_contributions,
    result_means,
)
from minicount.analysis.hooks import run_with_cache
from minicount.data import BOS, EOS

from .designed import BIAS, BOS_SINK, COUNT_VALUES, COUNTER, SCALE, counts, hand_built, l_acc_of


def test_ablating_nothing_reproduces_and_everything_leaves_the_direct_path(held_out):
    tokens, _, _ = held_out
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 2).items()}
    full = mc.forward(params, tokens, config)
    np.testing.assert_allclose(ablated_logits(params, tokens, config, [True] * 3), full, atol=1e-12)
    parts = head_logit_contributions(params, tokens, config)
    none = ablated_logits(params, tokens, config, [False] * 3)
    np.testing.assert_allclose(none, parts["direct"] + parts["bias"], atol=1e-12)
    assert not np.allclose(none, full)


def test_mean_ablation_uses_the_stated_mean(held_out):
    tokens, _, mask = held_out
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 4).items()}
    fill = np.random.default_rng(0).standard_normal((3, config.d_model))  # any stated values
    logits = ablated_logits(params, tokens, config, [True, False, False], fill=fill)
    parts = head_logit_contributions(params, tokens, config)
    expected = (
        parts["direct"]
        + parts["bias"]
        + parts["heads"][0]
        + (fill[1] + fill[2]) @ params["unembed.W_U"]
    )
    np.testing.assert_allclose(logits, expected, atol=1e-10)
    # and the study's mean is the mean head output over the real positions, by brute force
    _, cache = run_with_cache(params, tokens, config, ["blocks.0.attn.hook_result"])
    result = cache["blocks.0.attn.hook_result"]  # [B, H, T, d]
    brute = np.stack([result[:, h][mask].mean(0) for h in range(3)])
    np.testing.assert_allclose(result_means(params, tokens, mask, config), brute, atol=1e-12)


def test_designed_ablation_effects(held_out):
    tokens, targets, mask = held_out
    # head 1 adds a constant 3 to the EOS logit; the bias is moved so the full model is unchanged
    params, config = hand_built([COUNTER, BOS_SINK], [COUNT_VALUES, {BOS: 0.03}])
    params["unembed.b_U"][EOS] = BIAS - 3.0
    study = ablation_study(params, tokens, targets, mask, config)
    rows = {(r["kind"], tuple(r["kept"])): r for r in study["zero"]}
    lead, n01 = counts(tokens, mask)
    z = np.where(n01 > 0, lead / np.maximum(n01, 1), 0.0)
    assert rows[("subset", (0, 1))]["l_acc"] == 1.0  # the designed model is perfect
    assert rows[("only", (0,))]["l_acc"] == pytest.approx(l_acc_of(SCALE * z - 4.0, tokens, mask))
    assert rows[("only", (1,))]["l_acc"] == pytest.approx(
        l_acc_of(np.full(z.shape, -1.0), tokens, mask)
    )
    assert rows[("subset", (1,))]["roc_auc"] == 0.5  # a constant score: all ties
    mean_rows = {(r["kind"], tuple(r["kept"])): r for r in study["mean"]}
    assert mean_rows[("only", (0,))]["l_acc"] == 1.0  # the sink's mean is its constant output


def test_subset_shortcut_matches_hooked_forward(held_out):
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 7).items()}
    means = result_means(params, tokens, mask, config)
    study = ablation_study(params, tokens, targets, mask, config)
    assert len([r for r in study["zero"] if r["kind"] == "subset"]) == 2**3
    for mode, fill in (("zero", None), ("mean", means)):
        for r in study[mode]:
            keep = [h in r["kept"] for h in range(3)]
            scores = ablated_logits(params, tokens, config, keep, fill=fill)[..., EOS]
            ref = mc.metrics.metrics_from_scores(scores, targets[..., EOS] > 0.5, mask)
            for k in ("l_acc", "s_acc", "roc_auc"):
                assert r[k] == pytest.approx(ref[k], abs=1e-12), (mode, r)


def test_all_subsets_are_listed():
    from minicount.analysis.ablation import head_sets

    sets = head_sets(4)
    subsets = [kept for kind, kept in sets if kind == "subset"]
    assert sorted(subsets) == sorted(c for r in range(5) for c in combinations(range(4), r))
    assert [kept for kind, kept in sets if kind == "only"] == [(0,), (1,), (2,), (3,)]
    assert not [s for s in head_sets(9) if s[0] == "subset"]
