"""The analysis instruments on hand-built models whose answers are known in advance.

The hand-built model (float64, d_model 8, d_head 1) has one-hot token embeddings in
dimensions 0..5, writes its heads into dimension 6 and reads the EOS logit from there:

    EOS logit = 100 * (Σ_h z_h) - 1,   z_h = Σ_j pattern_h[t, j] * value(token_j)

With every query token given the same query, head h's score for a key is W_K[h][token, 0],
so the attention of each head is designed key by key.
"""

import json
import math
from itertools import combinations

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import (
    ablated_logits,
    ablation_study,
    aggregation_weights,
    analyze_model,
    attention_patterns,
    attention_stats,
    eos_contributions,
    head_logit_contributions,
    head_semantics,
    intervention_study,
    linear_fit,
    result_means,
    score_table,
)
from minicount.analysis.attention_stats import exact_weights, measured_weights
from minicount.analysis.hooks import run_with_cache
from minicount.analysis.interventions import force_weight_hook, permute_values_hook
from minicount.data import BOS, EOS, ONE, TWO, ZERO, DataConfig, eval_set
from minicount.metrics import roc_auc

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


@pytest.fixture(scope="module")
def held_out():
    return eval_set(DataConfig(max_len=12, n_eval=200))


def counts(tokens, mask):
    """#1 - #0 and #0 + #1 of every prefix, by brute force over the token ids. [B, T] each."""
    real = np.asarray(mask)
    ones = np.cumsum((tokens == ONE) & real, axis=1)
    zeros = np.cumsum((tokens == ZERO) & real, axis=1)
    return ones - zeros, ones + zeros


def l_acc_of(decisions, tokens, mask):
    lead, _ = counts(tokens, mask)
    return float(((decisions > 0) == (lead > 0))[mask].mean())


# ---------------------------------------------------------------- attribution


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


# ---------------------------------------------------------------- patterns and attention statistics


def test_patterns_shape_rows_and_causality():
    config = mc.ModelConfig(n_layers=2, n_heads=3, layernorm=True)
    params = mc.init_params(config, 1)
    tokens, _, _ = mc.data.sample_batch(5, 9, np.random.default_rng(2))
    A = attention_patterns(params, tokens, config)
    T = tokens.shape[1]
    assert A.shape == (2, 5, 3, T, T)
    np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-5)
    assert np.all(A[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)


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


# ---------------------------------------------------------------- ablation


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


# ---------------------------------------------------------------- semantics


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


# ---------------------------------------------------------------- ROC AUC


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_against_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    scores = rng.integers(0, 4, size=n).astype(float)  # few values: many ties
    labels = rng.random(n) < 0.5
    labels[0], labels[1] = True, False
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


# ---------------------------------------------------------------- aggregation and linear fits


def test_aggregation_of_two_copies_weighted_three_to_one(held_out):
    tokens, targets, mask = held_out
    params, config = hand_built([COUNTER, COUNTER], [COUNT_VALUES, COUNT_VALUES])
    params["blocks.0.attn.W_O"][0, 0, SLOT] = 1.5  # head 0 writes 3x as much as head 1
    params["blocks.0.attn.W_O"][1, 0, SLOT] = 0.5
    agg = aggregation_weights(params, tokens, targets, mask, config)
    np.testing.assert_allclose(agg["alpha_trained"], [0.75, 0.25], rtol=1e-9)
    assert agg["trained"]["l_acc"] == 1.0
    assert (
        agg["fitted"]["l_acc"] == 1.0 and agg["uniform"]["l_acc"] == 1.0
    )  # copies: uniform suffices
    assert agg["converged"]


def test_aggregation_needs_unequal_weights_when_one_head_is_noise(held_out):
    tokens, targets, mask = held_out
    twos = {ZERO: -20.0, ONE: -20.0, TWO: 5.0, BOS: 5.0}  # counts 2s against BOS: no signal
    params, config = hand_built([COUNTER, twos], [COUNT_VALUES, {TWO: 1.0, BOS: -1.0}])
    params["blocks.0.attn.W_O"][1, 0, SLOT] = 0.01  # the model barely reads it
    agg = aggregation_weights(params, tokens, targets, mask, config)
    assert agg["trained"]["l_acc"] == 1.0 and agg["fitted"]["l_acc"] > 0.99
    assert agg["uniform"]["l_acc"] < agg["fitted"]["l_acc"] - 0.1  # equal weight lets noise in
    assert agg["alpha_fitted"][0] > 0.9 and agg["n_eff_fitted"] < 1.2


def test_linear_fit_of_a_designed_model(held_out):
    tokens, targets, mask = held_out
    params, config = hand_built([COUNTER, COUNTER], [COUNT_VALUES, COUNT_VALUES])
    fit = linear_fit(params, tokens, targets, mask, config)
    assert fit["score_r2"] == pytest.approx(1.0, abs=1e-9)  # score = 100 (c0 + c1)/100 - 1
    assert fit["decision_agreement"] == 1.0 and fit["labels"]["l_acc"] == 1.0


# ---------------------------------------------------------------- interventions


def test_forcing_w01_repairs_an_unbalanced_counter(held_out):
    tokens, targets, mask = held_out
    tilted = {**COUNTER, ONE: 6.0}  # w_01 = e: 1s count more than 0s
    params, config = hand_built([tilted], [COUNT_VALUES])
    rows = {r["name"]: r for r in intervention_study(params, tokens, targets, mask, config)}
    assert rows["none"]["l_acc"] < 1.0
    assert rows["force_w01=1"]["l_acc"] == 1.0 and rows["force_w01=1"]["delta"]["l_acc"] > 0
    # the forced pattern has w_01 = 1 at every query, measured
    hook = force_weight_hook(tokens, 0, ZERO, ONE, 1.0)
    _, cache = run_with_cache(
        params,
        tokens,
        config,
        ["blocks.0.attn.hook_pattern"],
        hooks={"blocks.0.attn.hook_attn_scores": hook},
    )
    w = measured_weights(cache["blocks.0.attn.hook_pattern"], tokens, mask)
    np.testing.assert_allclose(w["w_01"], 1.0, rtol=1e-9)


def test_forcing_w02_zero_removes_the_twos(held_out):
    tokens, _, mask = held_out
    config = mc.ModelConfig(n_heads=2, pos_emb=True, n_ctx=20)  # measured, not from a table
    params = mc.init_params(config, 3)
    hook = force_weight_hook(tokens, 1, ZERO, TWO, 0.0)
    _, cache = run_with_cache(
        params,
        tokens,
        config,
        ["blocks.0.attn.hook_pattern"],
        hooks={"blocks.0.attn.hook_attn_scores": hook},
    )
    A = cache["blocks.0.attn.hook_pattern"]
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


# ---------------------------------------------------------------- everything at once


def test_analyze_model_is_json_ready(held_out):
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4)
    params = mc.init_params(config, 0)
    result = analyze_model(params, tokens[:40], targets[:40], mask[:40], config)
    text = json.dumps(result, allow_nan=False)
    assert result["exact"] and len(result["semantics"]) == 2
    assert {"metrics", "attention", "ablation", "aggregation", "linear", "interventions"} <= set(
        result
    )
    assert len([r for r in result["ablation"]["zero"] if r["kind"] == "subset"]) == 4
    assert "NaN" not in text


def test_analyze_model_on_an_inexact_config_says_so(held_out):
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4, mlp=True, d_mlp=16)
    result = analyze_model(mc.init_params(config, 0), tokens[:20], targets[:20], mask[:20], config)
    assert result["exact"] is False and "mlp" in result["exact_problem"]
    assert result["aggregation"] is None and result["semantics"][0]["auc_alone"] is None
    json.dumps(result, allow_nan=False)


def test_all_subsets_are_listed():
    from minicount.analysis.ablation import head_sets

    sets = head_sets(4)
    subsets = [kept for kind, kept in sets if kind == "subset"]
    assert sorted(subsets) == sorted(c for r in range(5) for c in combinations(range(4), r))
    assert [kept for kind, kept in sets if kind == "only"] == [(0,), (1,), (2,), (3,)]
    assert not [s for s in head_sets(9) if s[0] == "subset"]


def numbers(obj):
    """Every number in a nested JSON-ready structure, in order (None kept as nan)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers(v)]
    if obj is None or isinstance(obj, (bool, int, float)):
        return [float("nan") if obj is None else float(obj)]
    return []


@pytest.mark.gpu
def test_analyze_model_on_gpu_matches_cpu(held_out):
    from minicount.backend import to_device

    from .conftest import gpu_ok

    if not gpu_ok():
        pytest.skip("needs CuPy and a CUDA GPU")
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 1).items()}
    cpu = analyze_model(params, tokens, targets, mask, config)
    gpu = analyze_model(to_device(params, "gpu"), tokens, targets, mask, config)
    for key in ("metrics", "aggregation", "semantics", "attention", "ablation", "interventions"):
        np.testing.assert_allclose(
            numbers(gpu[key]), numbers(cpu[key]), rtol=1e-6, atol=1e-9, err_msg=key
        )


def test_jsonable_turns_every_leaf_into_plain_json():
    from minicount.analysis import jsonable

    got = jsonable(
        {
            1: (np.float32(1.5), np.float64(np.nan), float("inf"), -0.0, 2.5),
            "ints": [np.int64(3), 4, np.arange(2)],
            "flags": [True, np.bool_(False), np.array([True])],
            "text": ["a", None],
            "array": np.array([[1.0, np.inf]], dtype=np.float32),
        }
    )
    want = {
        "1": [1.5, None, None, -0.0, 2.5],
        "ints": [3, 4, [0, 1]],
        "flags": [True, False, [True]],
        "text": ["a", None],
        "array": [[1.0, None]],
    }
    assert got == want
    leaves = [*got["1"], *got["ints"][:2], *got["flags"][:2]]
    assert [type(v) for v in leaves] == [
        float,
        type(None),
        type(None),
        float,
        float,
        int,
        int,
        bool,
        bool,
    ]
