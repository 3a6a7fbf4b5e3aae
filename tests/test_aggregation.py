"""Logistic fits, the best uniform vote, aggregation and linear read-outs
(minicount/analysis/aggregation.py and linear.py), also on designed models (tests/designed.py).

Oracles: scipy's general-purpose minimiser for the penalised problem, closed forms (an
intercept-only fit is the logit of the base rate), brute-force searches over thresholds,
and per-model calls for the batched entry points.
"""

import math

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import minicount as mc
from minicount.analysis import aggregation_weights, linear_fit
from minicount.analysis.aggregation import (
    aggregation_batched,
    aggregation_from_contributions,
    best_threshold,
    best_uniform,
    fit_logistic,
    fit_logistic_batched,
)
from minicount.analysis.attribution import eos_contributions
from minicount.analysis.linear import linear_fit_batched, linear_fit_from_contributions
from minicount.data import BOS, EOS, ONE, TWO, ZERO, DataConfig, eval_set

from .designed import COUNT_VALUES, COUNTER, SLOT, hand_built


def toy(seed, n=300, k=3, separable=False):
    """(X [n, k], y [n], offset [n]) of a random logistic problem."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k))
    offset = 0.5 * rng.standard_normal(n)
    logit = X @ rng.standard_normal(k) + offset + 0.3
    y = logit > 0 if separable else rng.random(n) < 1 / (1 + np.exp(-logit))
    return X, y, offset


def penalised_optimum(X, y, offset, l2):
    """(w, b) minimising mean BCE + (l2 / 2)|w|² by scipy's BFGS (the bias free)."""

    def objective(theta):
        z = offset + X @ theta[:-1] + theta[-1]
        p = 1 / (1 + np.exp(-z))
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * theta[:-1] @ theta[:-1]
        grad = np.r_[X.T @ (p - y) / len(y) + l2 * theta[:-1], np.mean(p - y)]
        return loss, grad

    res = scipy.optimize.minimize(
        objective, np.zeros(X.shape[1] + 1), jac=True, method="BFGS", options={"gtol": 1e-12}
    )
    return res.x[:-1], res.x[-1]


# ----------------------------------------------------------------------------- logistic fits


@pytest.mark.parametrize("l2", [0.0, 1e-3, 0.1])
def test_fit_matches_a_general_minimiser(l2):
    X, y, offset = toy(0)
    fit = fit_logistic(X, y, offset=offset, l2=l2)
    w, b = penalised_optimum(X, y, offset, l2)
    assert fit["converged"]
    np.testing.assert_allclose(fit["w"], w, atol=1e-6)
    assert fit["b"] == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("l2", [0.0, 1e-4, 0.5])
def test_the_bias_is_not_shrunk(l2):
    # an intercept-only problem (one all-zero feature) with base rate p: b = logit(p) exactly
    y = np.r_[np.ones(30), np.zeros(70)]
    fit = fit_logistic(np.zeros((100, 1)), y, l2=l2)
    assert fit["converged"]
    assert fit["b"] == pytest.approx(math.log(0.3 / 0.7), abs=1e-9)


@pytest.mark.parametrize("l2", [0.0, 1e-4, 0.1])
def test_shifting_a_feature_moves_only_the_bias(l2):
    X, y, offset = toy(1)
    shift = np.array([3.0, -5.0, 0.0])
    fit = fit_logistic(X, y, offset=offset, l2=l2)
    moved = fit_logistic(X + shift, y, offset=offset, l2=l2)
    np.testing.assert_allclose(moved["w"], fit["w"], atol=1e-7)
    assert moved["b"] == pytest.approx(fit["b"] - float(shift @ fit["w"]), abs=1e-6)


@pytest.mark.parametrize("l2", [1e-4, 0.0])
def test_separable_data_stays_finite(l2):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    x = x[np.abs(x - 0.3) > 0.05][:, None]  # a margin of 0.1 around 0.3
    y = x[:, 0] > 0.3
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, no nan
        fit = fit_logistic(x, y, l2=l2, max_iter=100)
    assert np.all(np.isfinite(fit["w"])) and np.isfinite(fit["b"])
    # with a penalty the optimum is finite and found; without, it is at infinity: say so
    assert fit["converged"] == (l2 > 0)
    boundary = -fit["b"] / float(fit["w"][0])
    assert 0.25 < boundary < 0.35  # inside the margin: every point on its side
    assert float(fit["w"][0]) > 10  # a steep fit, as separable data calls for


def test_fit_recovers_known_weights():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40000, 2))
    offset = rng.standard_normal(40000)
    w_true, b_true = np.array([1.5, -2.0]), 0.5
    p = 1 / (1 + np.exp(-(X @ w_true + b_true + offset)))
    y = rng.random(40000) < p
    fit = fit_logistic(X, y, offset=offset, l2=0.0)
    assert fit["converged"]
    np.testing.assert_allclose(fit["w"], w_true, atol=0.08)
    assert fit["b"] == pytest.approx(b_true, abs=0.06)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_logistic(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError):
        fit_logistic(np.zeros((5, 1)), np.zeros(4))
    with pytest.raises(ValueError):
        fit_logistic(np.zeros((5, 1)), np.full(5, 0.5))
    with pytest.raises(ValueError):
        fit_logistic_batched(np.zeros((2, 5, 1)), np.zeros((2, 5)), mask=np.zeros((2, 5), bool))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    G=st.integers(1, 4),
    k=st.integers(1, 4),
    separable=st.booleans(),
    l2=st.sampled_from([1e-6, 1e-3, 0.1]),
)
def test_batched_fit_equals_single_fits(seed, G, k, separable, l2):
    """G problems of different sizes (a row mask), strengths and data, fitted together."""
    rng = np.random.default_rng(seed)
    N = 120
    X, y, off, mask = np.zeros((G, N, k)), np.zeros((G, N)), np.zeros((G, N)), np.zeros((G, N))
    sizes = rng.integers(40, N + 1, size=G)
    strengths = l2 * 10.0 ** rng.integers(0, 2, size=G)
    for g in range(G):
        Xg, yg, og = toy(seed + g, n=int(sizes[g]), k=k, separable=separable)
        X[g, : sizes[g]], y[g, : sizes[g]], off[g, : sizes[g]] = Xg, yg, og
        mask[g, : sizes[g]] = 1
        X[g, sizes[g] :] = 1e3  # rows outside a problem must not matter
    batch = fit_logistic_batched(X, y, offset=off, mask=mask.astype(bool), l2=strengths)
    for g in range(G):
        n = sizes[g]
        one = fit_logistic(X[g, :n], y[g, :n], offset=off[g, :n], l2=strengths[g])
        assert bool(batch["converged"][g]) and one["converged"]
        np.testing.assert_allclose(batch["w"][g], one["w"], atol=1e-6, rtol=1e-6)
        assert batch["b"][g] == pytest.approx(one["b"], abs=1e-6, rel=1e-6)


# ----------------------------------------------------------------------------- best uniform vote


def brute_best(v, y):
    """The most positions right by any rule "v > θ", θ from below all scores or at a score."""
    thresholds = np.r_[v.min() - 1, v]
    return max(int(((v > th) == y).sum()) for th in thresholds)


@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(-4, 5, size=(2, 3, 25)).astype(float)  # few values: many ties
    y = rng.random((2, 25)) < 0.5
    correct, theta = best_threshold(v, y)
    for g in range(2):
        for a in range(3):
            assert correct[g, a] == brute_best(v[g, a], y[g])
            assert int(((v[g, a] > theta[g, a]) == y[g]).sum()) == correct[g, a]


def test_best_uniform_against_a_brute_force_grid():
    rng = np.random.default_rng(5)
    N = 40
    total, offset = rng.standard_normal((2, N)), rng.standard_normal((2, N))
    y = rng.random((2, N)) < 1 / (1 + np.exp(-(2 * total + offset)))
    scales = np.array([[0.0, 0.3, 1.0, 3.0, 10.0], [0.0, 0.5, 2.0, 4.0, 8.0]])
    best = best_uniform(total, offset, y, scales)
    for g in range(2):
        # brute force: every grid scale and every scale of the refinement, every threshold
        grid = np.unique(np.r_[scales[g], np.linspace(0, 10, 2001)])
        brute = max(brute_best(offset[g] + a * total[g], y[g]) for a in grid)
        got = int(((offset[g] + best["scale"][g] * total[g] + best["bias"][g] > 0) == y[g]).sum())
        assert got == best["correct"][g]
        on_grid = max(brute_best(offset[g] + a * total[g], y[g]) for a in scales[g])
        assert on_grid <= got <= brute  # at least the grid's best, never beyond any scale


# ----------------------------------------------------------------------------- a trained ensemble


@pytest.fixture(scope="module")
def ensemble():
    """Contributions [M, H, B, T], offsets [M, B, T] and the held-out batch of 3 small models."""
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=4)
    params, _ = mc.train(
        config, seed=[0, 1, 2], steps=60, batch_size=32, max_len=8, eval_every=0, n_eval=64
    )
    tokens, targets, mask = eval_set(DataConfig(max_len=8, n_eval=150))
    parts = [eos_contributions(m, tokens, config) for m in mc.members(params)]
    c = np.stack([p[0] for p in parts])
    offset = np.stack([p[1] for p in parts])
    return c, offset, targets, mask


def close(a, b, path=""):
    """Nested dicts/lists of numbers equal to 1e-6 (None and bools exactly)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, (bool, type(None))):
        assert a == b, path
    else:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6, nan_ok=True), path


def test_batched_aggregation_equals_per_model(ensemble):
    c, offset, targets, mask = ensemble
    batch = aggregation_batched(c, offset, targets, mask, l2=1e-3)
    for i in range(c.shape[0]):
        close(batch[i], aggregation_from_contributions(c[i], offset[i], targets, mask, l2=1e-3))


def test_aggregation_reports_what_it_says(ensemble):
    c, offset, targets, mask = ensemble
    y = (targets[..., EOS] > 0.5)[mask]
    for i, agg in enumerate(aggregation_batched(c, offset, targets, mask)):
        H = c.shape[1]
        raw = np.array(agg["alpha_fitted_raw"])
        np.testing.assert_allclose(agg["alpha_fitted"], np.abs(raw) / np.abs(raw).sum())
        assert agg["sign_fitted"] == [1 if a >= 0 else -1 for a in raw]
        assert sum(agg["alpha_trained"]) == pytest.approx(1.0) and agg["sign_trained"] == [1] * H
        sigma = c[i][:, mask].std(axis=1)
        np.testing.assert_allclose(agg["sigma"], sigma, rtol=1e-6)
        assert agg["n_eff_trained"] == pytest.approx(sigma.sum() ** 2 / (sigma**2).sum())
        assert 1.0 <= agg["n_eff_fitted"] <= H
        # the most accurate uniform vote, recomputed from its scale and bias
        z_total = (c[i] / sigma[:, None, None]).sum(axis=0)
        a, b = agg["uniform_best"]["scale"], agg["uniform_best"]["bias"]
        assert a >= 0
        right = ((offset[i] + a * z_total + b)[mask] > 0) == y
        assert agg["uniform"]["l_acc"] == pytest.approx(right.mean())
        if agg["uniform_weight"] > 0:  # the log-loss vote is one of the candidates
            assert agg["uniform"]["l_acc"] >= agg["uniform_logloss"]["l_acc"]
        assert agg["l2"] == 1e-4
        strengths = [r["l2"] for r in agg["l2_check"]]
        assert strengths == sorted(strengths) and 1e-4 in strengths and len(strengths) >= 4
        main = agg["l2_check"][strengths.index(1e-4)]
        assert main["fitted"] == agg["fitted"] and main["n_eff_fitted"] == agg["n_eff_fitted"]


def test_batched_linear_fit_equals_per_model(ensemble):
    c, offset, targets, mask = ensemble
    batch = linear_fit_batched(c, offset, targets, mask)
    for i in range(c.shape[0]):
        close(batch[i], linear_fit_from_contributions(c[i], offset[i], targets, mask))


# ---------------------------------------------------------------- designed models


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
