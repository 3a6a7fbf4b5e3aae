"""Logistic fits, the best uniform vote, aggregation and linear read-outs
(minicount/analysis/logistic.py, aggregation.py and linear.py), also on designed models
(tests/designed.py).

Oracles: scipy's general-purpose minimiser for the penalised problem, closed forms (an
intercept-only fit is the logit of the base rate), brute-force searches over thresholds,
and, for the batched entry points, each model computed apart by scipy and direct sums.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import minicount as mc
from minicount.analysis import aggregation_weights, linear_fit
from minicount.analysis.aggregation import (
    aggregation_batched,
    aggregation_from_contributions,
    best_threshold,
    best_uniform,
)
from minicount.analysis.attribution import eos_contributions
from minicount.analysis.linear import linear_fit_batched
from minicount.analysis.logistic import fit_logistic, fit_logistic_batched
from minicount.data import BOS, EOS, ONE, TWO, ZERO, DataConfig, V, eval_set

from .conftest import gpu_ok
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


NEW_KEYS = {
    "solo_slope", "solo_bias", "calibrated", "calibrated_weight", "bias_calibrated",
    "calibrated_best", "calibrated_best_vote", "logloss", "margin", "error_removed",
    "error_removed_calibrated", "logloss_removed", "logloss_removed_calibrated",
    "n_eff_fitted_raw", "n_eff_fitted_calibrated", "n_eff_trained_calibrated",
    "converged_calibrated",
}  # fmt: skip


def participation(w):
    w = np.abs(np.asarray(w, dtype=float))
    return w.sum() ** 2 / (w**2).sum()


def metrics_by_hand(s, y, mask):
    """l-acc, s-acc and ROC AUC of scores s [B, T] against labels y [B, T] on the real
    positions, written out: decisions s > 0, a string right when all its positions are, AUC
    as the Mann-Whitney U of the positives against the negatives (ties one half)."""
    right = (s > 0) == y
    real = mask.astype(bool)
    pos, neg = s[real & y], s[real & ~y]
    u = scipy.stats.mannwhitneyu(pos, neg).statistic
    return {
        "l_acc": right[real].mean(),
        "s_acc": np.mean([right[b][real[b]].all() for b in range(len(s))]),
        "roc_auc": u / (len(pos) * len(neg)),
    }


def test_each_models_aggregation_against_scipy_and_direct_sums(ensemble):
    """Every member of the batched comparison against its own model computed apart: σ and
    the trained score by direct sums, the fitted and the log-loss uniform weights by scipy's
    minimiser (penalised_optimum), their metrics written out (metrics_by_hand)."""
    c, offset, targets, mask = ensemble
    c, offset = c.astype(np.float64), offset.astype(np.float64)  # as aggregation does
    labels = targets[..., EOS] > 0.5
    y = labels[mask].astype(float)
    l2 = 1e-3
    for i, agg in enumerate(aggregation_batched(c, offset, targets, mask, l2=l2)):
        assert NEW_KEYS <= set(agg)
        ci, off = c[i][:, mask], offset[i][mask]  # [H, N], [N]
        sigma = ci.std(axis=1)
        np.testing.assert_allclose(agg["sigma"], sigma, rtol=1e-9)
        z = c[i] / sigma[:, None, None]  # [H, B, T]
        alpha, b_fit = penalised_optimum(z[:, mask].T, y, off, l2)
        np.testing.assert_allclose(agg["alpha_fitted_raw"], alpha, rtol=1e-6, atol=1e-6)
        assert agg["bias_fitted"] == pytest.approx(b_fit, rel=1e-6, abs=1e-6)
        w_uni, b_uni = penalised_optimum(z.sum(axis=0)[mask][:, None], y, off, l2)
        assert agg["uniform_weight"] == pytest.approx(w_uni[0], rel=1e-6, abs=1e-6)
        assert agg["bias_uniform"] == pytest.approx(b_uni, rel=1e-6, abs=1e-6)
        assert agg["n_eff_trained"] == pytest.approx(participation(sigma))
        assert agg["n_eff_fitted"] == pytest.approx(participation(alpha), rel=1e-5)
        scores = {
            "trained": offset[i] + c[i].sum(axis=0),
            "fitted": offset[i] + np.einsum("h,hbt->bt", alpha, z) + b_fit,
            "uniform_logloss": offset[i] + w_uni[0] * z.sum(axis=0) + b_uni,
        }
        for key, s in scores.items():
            want = metrics_by_hand(s, labels, mask)
            for metric, value in want.items():
                assert agg[key][metric] == pytest.approx(value, abs=1e-9), (key, metric)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_ok(), reason="needs CuPy and a CUDA GPU")
def test_batched_aggregation_on_gpu_matches_cpu(ensemble):
    from minicount.backend import to_device

    c, offset, targets, mask = ensemble
    cpu = aggregation_batched(c, offset, targets, mask)
    gpu = aggregation_batched(to_device(c, "gpu"), to_device(offset, "gpu"), targets, mask)
    for i in range(c.shape[0]):
        close(gpu[i], cpu[i])


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


# ------------------------------------------------- the calibrated reference, log-loss, margin


def bce(s, y):
    """Mean binary cross-entropy in nats, -mean(y log p + (1 - y) log(1 - p)), p = expit(s)."""
    return -float(np.mean(y * scipy.special.log_expit(s) + (1 - y) * scipy.special.log_expit(-s)))


def reference(c, offset, y, l2):
    """Everything the calibrated reference needs, fitted by scipy (penalised_optimum) on the
    real positions alone: c [H, N], offset [N], y [N] -> dict of σ, solo slopes and biases,
    the calibrated (a, b), and the fitted and uniform log-loss fits (all in float64, as
    aggregation computes them from float32 contributions too)."""
    c, offset = c.astype(np.float64), offset.astype(np.float64)
    sigma = c.std(axis=1)
    z = c / sigma[:, None]
    solo = [penalised_optimum(z[h][:, None], y, np.zeros_like(offset), l2) for h in range(len(c))]
    slope = np.array([w[0] for w, _ in solo]) / sigma
    total = slope @ c  # [N] Σ_h β_h c_h
    a, b = penalised_optimum(total[:, None], y, offset, l2)
    alpha, b_fit = penalised_optimum(z.T, y, offset, l2)
    w_uni, b_uni = penalised_optimum(z.sum(axis=0)[:, None], y, offset, l2)
    return {
        "sigma": sigma,
        "slope": slope,
        "solo_bias": np.array([b for _, b in solo]),
        "total": total,
        "a": a[0],
        "b": b,
        "scores": {
            "trained": offset + c.sum(axis=0),
            "fitted": offset + alpha @ z + b_fit,
            "uniform_logloss": offset + w_uni[0] * z.sum(axis=0) + b_uni,
            "calibrated": offset + a[0] * total + b,
        },
    }


@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_solo_fits_and_calibrated_vote_against_scipy(ensemble, l2):
    c, offset, targets, mask = ensemble
    c, offset = c.astype(np.float64), offset.astype(np.float64)  # as aggregation does
    y = (targets[..., EOS] > 0.5)[mask].astype(float)
    for i, agg in enumerate(aggregation_batched(c, offset, targets, mask, l2=l2)):
        ref = reference(c[i][:, mask], offset[i][mask], y, l2)
        assert agg["converged_calibrated"]
        # slopes compared on the z scale, where BFGS's tolerance holds (atol 1e-6, as above)
        sigma = ref["sigma"]
        np.testing.assert_allclose(
            np.array(agg["solo_slope"]) * sigma, ref["slope"] * sigma, rtol=1e-6, atol=1e-6
        )
        np.testing.assert_allclose(agg["solo_bias"], ref["solo_bias"], rtol=1e-6, atol=1e-6)
        assert agg["calibrated_weight"] == pytest.approx(ref["a"], rel=1e-6, abs=1e-6)
        assert agg["bias_calibrated"] == pytest.approx(ref["b"], rel=1e-6, abs=1e-6)
        for key, s in ref["scores"].items():
            assert agg["logloss"][key] == pytest.approx(bce(s, y), rel=1e-6), key
        calibrated_right = float(((ref["scores"]["calibrated"] > 0) == y).mean())
        assert agg["calibrated"]["l_acc"] == pytest.approx(calibrated_right)
        # the two accuracy searches, scored from the scale and bias they report
        a, b = agg["uniform_best"]["scale"], agg["uniform_best"]["bias"]
        s_uniform = offset[i][mask] + a * (c[i][:, mask] / sigma[:, None]).sum(axis=0) + b
        assert agg["logloss"]["uniform"] == pytest.approx(bce(s_uniform, y), rel=1e-6)
        a, b = agg["calibrated_best_vote"]["scale"], agg["calibrated_best_vote"]["bias"]
        s_best = offset[i][mask] + a * ref["total"] + b
        assert a >= 0
        assert agg["logloss"]["calibrated_best"] == pytest.approx(bce(s_best, y), rel=1e-5)
        best_right = float(((s_best > 0) == y).mean())
        assert agg["calibrated_best"]["l_acc"] == pytest.approx(best_right)
        if ref["a"] > 0:  # the log-loss scale is one of the candidates of the search
            assert best_right >= calibrated_right
        # scale 0 is a candidate too: never worse than the best threshold on the offset alone
        assert best_right * len(y) >= brute_best(offset[i][mask], y.astype(bool))


def test_solo_slope_unpenalised_on_overlapping_classes():
    # one head per model, classes that overlap: at l2 -> 0 the solo fit is the ordinary
    # maximum-likelihood logistic regression, here scipy's on c itself (raw units)
    rng = np.random.default_rng(3)
    B, T, M, H = 50, 12, 2, 3
    y = rng.random((B, T)) < 0.4
    mask = np.ones((B, T), bool)
    targets = np.zeros((B, T, V))
    targets[..., EOS] = y
    c = rng.standard_normal((M, H, B, T)) * rng.uniform(0.1, 5, (M, H, 1, 1))
    c += (2 * y - 1) * rng.uniform(0.2, 1.0, (M, H, 1, 1))
    offset = rng.standard_normal((M, B, T))
    for i, agg in enumerate(aggregation_batched(c, offset, targets, mask, l2=1e-12)):
        for h in range(H):
            x = c[i, h][mask]
            w, b = penalised_optimum(x[:, None], y[mask].astype(float), np.zeros_like(x), 0.0)
            assert agg["solo_slope"][h] == pytest.approx(w[0], rel=1e-5)
            assert agg["solo_bias"][h] == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_margin_against_a_direct_quantile(ensemble):
    c, offset, targets, mask = ensemble
    c, offset = c.astype(np.float64), offset.astype(np.float64)  # as aggregation does
    y = (targets[..., EOS] > 0.5)[mask]
    for i, agg in enumerate(aggregation_batched(c, offset, targets, mask)):
        ci, off = c[i][:, mask], offset[i][mask]
        sigma = np.array(agg["sigma"])
        scores = {
            "trained": off + ci.sum(axis=0),
            "fitted": off + (np.array(agg["alpha_fitted_raw"]) / sigma) @ ci + agg["bias_fitted"],
            "uniform_logloss": off
            + agg["uniform_weight"] * (ci / sigma[:, None]).sum(axis=0)
            + agg["bias_uniform"],
            "calibrated": off
            + agg["calibrated_weight"] * (np.array(agg["solo_slope"]) @ ci)
            + agg["bias_calibrated"],
        }
        assert set(agg["margin"]) == set(scores)
        for key, s in scores.items():
            signed = np.where(y, s, -s) / s.std()
            assert agg["margin"][key] == pytest.approx(np.quantile(signed, 0.05), rel=1e-6), key


def test_effective_heads_in_three_units_and_the_removed_shares(ensemble):
    c, offset, targets, mask = ensemble
    for agg in aggregation_batched(c, offset, targets, mask):
        alpha, sigma = np.array(agg["alpha_fitted_raw"]), np.array(agg["sigma"])
        beta = np.array(agg["solo_slope"])
        assert agg["n_eff_fitted_raw"] == pytest.approx(participation(alpha / sigma))
        assert agg["n_eff_fitted_calibrated"] == pytest.approx(
            participation(alpha / (sigma * beta))
        )
        assert agg["n_eff_trained_calibrated"] == pytest.approx(participation(1 / beta))
        err = {k: 1 - agg[k]["l_acc"] for k in ("uniform", "fitted", "calibrated_best")}
        ll = agg["logloss"]
        pairs = (("error_removed", "uniform"), ("error_removed_calibrated", "calibrated_best"))
        for key, ref in pairs:
            expected = None if err[ref] == 0 else (err[ref] - err["fitted"]) / err[ref]
            assert agg[key] == pytest.approx(expected), key
        assert agg["logloss_removed"] == pytest.approx(
            (ll["uniform_logloss"] - ll["fitted"]) / ll["uniform_logloss"]
        )
        assert agg["logloss_removed_calibrated"] == pytest.approx(
            (ll["calibrated"] - ll["fitted"]) / ll["calibrated"]
        )


def noisy_heads(seed=0, B=400, T=10):
    """(y [B, T], mask, targets, rng): balanced labels and a mask with ragged ends."""
    rng = np.random.default_rng(seed)
    y = rng.random((B, T)) < 0.5
    mask = np.ones((B, T), bool)
    mask[:, -2:] = rng.random((B, 2)) < 0.5
    targets = np.zeros((B, T, V))
    targets[..., EOS] = y
    return y, mask, targets, rng


def test_calibrated_members_suffice_for_independent_heads():
    # heads x_h = μ_h (2y - 1) + ε_h with independent unit noise: the Bayes log-odds is
    # Σ_h 2 μ_h x_h and each head's own log-odds is 2 μ_h x_h, so the solo slopes are the
    # best joint weights (a = 1), while equal weights on σ-standardised heads are not
    y, mask, targets, rng = noisy_heads()
    mu, scale = np.array([2.0, 1.0, 0.5, 0.25]), np.array([1.0, 3.0, 0.2, 5.0])
    x = (2 * y - 1) * mu[:, None, None] + rng.standard_normal((4,) + y.shape)
    agg = aggregation_from_contributions(scale[:, None, None] * x, np.zeros(y.shape), targets, mask)
    np.testing.assert_allclose(np.array(agg["solo_slope"]) * scale, 2 * mu, rtol=0.15, atol=0.05)
    assert agg["calibrated_weight"] == pytest.approx(1.0, abs=0.15)
    assert abs(agg["logloss_removed_calibrated"]) < 0.05  # calibrated uniform ≈ fitted
    assert agg["logloss_removed"] > 0.5  # σ-uniform is far from it
    assert agg["margin"]["calibrated"] == pytest.approx(agg["margin"]["fitted"], abs=0.02)
    assert agg["margin"]["uniform_logloss"] < agg["margin"]["fitted"] - 0.05


def test_calibrated_members_on_shared_noise():
    # copies of one noisy signal at different scales: every positive weighting is the same
    # score up to scale, so both uniform references equal the fit
    y, mask, targets, rng = noisy_heads(1)
    signal = (2 * y - 1) + rng.standard_normal(y.shape)
    offset = 0.1 * rng.standard_normal(y.shape)
    copies = np.array([2.0, 0.5, 0.1, 1.0])[:, None, None] * signal
    agg = aggregation_from_contributions(copies, offset, targets, mask)
    assert abs(agg["logloss_removed_calibrated"]) < 1e-4
    assert abs(agg["logloss_removed"]) < 1e-4
    assert agg["n_eff_fitted_calibrated"] == pytest.approx(4.0, rel=1e-6)  # ridge splits copies
    # add a head with its own noise: the copies share theirs, so the calibrated sum counts
    # that evidence three times over, and the fitted weights beat equal calibrated ones
    own = 0.7 * (1.5 * (2 * y - 1) + rng.standard_normal(y.shape))
    heads = np.concatenate([copies[:3], own[None]])
    agg = aggregation_from_contributions(heads, offset, targets, mask)
    assert agg["logloss_removed_calibrated"] > 0.2
    assert agg["logloss"]["fitted"] < agg["logloss"]["calibrated"] - 0.03


def test_copies_of_a_perfect_counter_leave_accuracy_nothing_to_say(held_out):
    # four copies of one perfect counter written at scales 0.4 / 0.3 / 0.2 / 0.1: every
    # weighting gets l-acc 1, so error_removed is undefined, yet the log-losses and margins
    # are finite, and the weights have known participation ratios in every unit
    tokens, targets, mask = held_out
    scales = np.array([0.4, 0.3, 0.2, 0.1])
    params, config = hand_built([COUNTER] * 4, [COUNT_VALUES] * 4)
    for h, s in enumerate(scales):
        params["blocks.0.attn.W_O"][h, 0, SLOT] = s
    agg = aggregation_weights(params, tokens, targets, mask, config)
    for key in ("trained", "fitted", "uniform", "uniform_logloss", "calibrated", "calibrated_best"):
        assert agg[key]["l_acc"] == 1.0, key
        assert math.isfinite(agg["logloss"][key]) and agg["logloss"][key] >= 0, key
    assert all(math.isfinite(v) and v > 0 for v in agg["margin"].values())  # all right
    assert agg["error_removed"] is None and agg["error_removed_calibrated"] is None
    assert math.isfinite(agg["logloss_removed"])
    assert math.isfinite(agg["logloss_removed_calibrated"])
    assert agg["converged"] and agg["converged_calibrated"]
    # the copies are one z: equal solo fits on z, so β_h ∝ 1 / scale_h and equal biases
    beta = np.array(agg["solo_slope"])
    np.testing.assert_allclose(beta * scales, beta[3] * scales[3], rtol=1e-6)
    np.testing.assert_allclose(agg["solo_bias"], agg["solo_bias"][0], rtol=1e-6)
    # by hand: the trained raw weights are 1, so on z they are ∝ scale, and on the calibrated
    # members ∝ 1 / β ∝ scale; the fit splits its weight on z equally (ridge on copies), so
    # ∝ 1 / scale in raw units and equal on the calibrated members
    assert agg["n_eff_trained_calibrated"] == pytest.approx(1 / 0.30, rel=1e-6)  # 1 / Σ s²
    assert agg["n_eff_fitted_calibrated"] == pytest.approx(4.0, rel=1e-6)
    inverse = np.array([2.5, 10 / 3, 5.0, 10.0])
    assert agg["n_eff_fitted_raw"] == pytest.approx(inverse.sum() ** 2 / (inverse**2).sum())
    assert agg["n_eff_fitted_raw"] == pytest.approx(3.0488, abs=1e-4)


def test_each_models_linear_fit_against_numpy_and_scipy(ensemble):
    """Every member of linear_fit_batched against its own model computed apart: the score's
    least squares by numpy.linalg.lstsq, the decision and label fits by scipy's minimiser
    on the standardised contributions (no offset, the default L2 on the weights)."""
    from minicount.analysis.logistic import L2

    c, offset, targets, mask = ensemble
    c, offset = c.astype(np.float64), offset.astype(np.float64)
    labels = targets[..., EOS] > 0.5
    y = labels[mask].astype(float)
    for i, fit in enumerate(linear_fit_batched(c, offset, targets, mask)):
        ci = c[i][:, mask].T  # [N, H]
        score = offset[i][mask] + ci.sum(axis=1)  # [N]
        A = np.c_[ci, np.ones(len(ci))]
        coef = np.linalg.lstsq(A, score, rcond=None)[0]
        r2 = 1 - ((score - A @ coef) ** 2).sum() / ((score - score.mean()) ** 2).sum()
        np.testing.assert_allclose(fit["score_coef"], coef[:-1], rtol=1e-6, atol=1e-9)
        assert fit["score_intercept"] == pytest.approx(coef[-1], rel=1e-6, abs=1e-9)
        assert fit["score_r2"] == pytest.approx(r2, rel=1e-9, abs=1e-12)
        z = c[i] / ci.std(axis=0)[:, None, None]  # [H, B, T]
        Z = z[:, mask].T
        decision = score > 0
        w_d, b_d = penalised_optimum(Z, decision.astype(float), np.zeros(len(Z)), L2)
        agreement = np.mean((Z @ w_d + b_d > 0) == decision)
        assert fit["decision_agreement"] == pytest.approx(agreement, abs=1.5 / len(Z))
        w, b = penalised_optimum(Z, y, np.zeros(len(Z)), L2)
        np.testing.assert_allclose(fit["label_weights"], w, rtol=1e-5, atol=1e-5)
        assert fit["label_bias"] == pytest.approx(b, rel=1e-5, abs=1e-5)
        s_labels = np.einsum("h,hbt->bt", w, z) + b
        assert fit["labels"]["l_acc"] == pytest.approx(
            metrics_by_hand(s_labels, labels, mask)["l_acc"], abs=1.5 / len(Z)
        )


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
