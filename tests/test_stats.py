"""Statistics over seeds (minicount/stats.py) and the verdict rules (minicount/results.py)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicount.results import claims, head_rows, two_sided, verdict
from minicount.stats import Interval, log_summary, mean_ci


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 300
    for t in range(trials):
        sample = rng.normal(loc=2.0, scale=1.0, size=40)
        iv = mean_ci(sample, n_boot=1000, seed=t)
        hits += iv.low <= 2.0 <= iv.high
    # percentile bootstrap at n = 40 is slightly narrow; a broken interval is far off
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_interval_width_matches_the_normal_theory():
    rng = np.random.default_rng(2)
    sample = rng.normal(size=400)
    iv = mean_ci(sample, n_boot=4000)
    half = 1.96 * sample.std(ddof=1) / math.sqrt(sample.size)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.1)
    assert iv.value == pytest.approx(sample.mean())


def test_mean_ci_skips_missing_values_and_handles_edge_cases():
    assert mean_ci([None, float("nan")]).n == 0
    one = mean_ci([0.3, None])
    assert (one.value, one.low, one.high, one.n) == (0.3, 0.3, 0.3, 1)
    same = mean_ci([1.0] * 5)
    assert same.low == same.high == 1.0


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30))
def test_interval_contains_its_estimate_and_lies_within_the_data(values):
    iv = mean_ci(values, n_boot=200)
    assert min(values) - 1e-12 <= iv.low <= iv.value + 1e-12
    assert iv.value - 1e-12 <= iv.high <= max(values) + 1e-12


def test_interval_against_a_cut_off():
    assert Interval(0.9, 0.8, 0.95, 8).above(0.75) is True
    assert Interval(0.6, 0.5, 0.7, 8).above(0.75) is False
    assert Interval(0.75, 0.7, 0.8, 8).above(0.75) is None


def test_log_summary_of_ratios_is_symmetric_on_the_log_scale():
    s = log_summary([0.1, 1.0, 10.0])
    assert s.geo_mean == pytest.approx(1.0) and s.median == pytest.approx(1.0)
    # an arithmetic mean would say 3.7; reciprocals give the same spread
    inverse = log_summary([10.0, 1.0, 0.1])
    assert (s.q25, s.q75) == pytest.approx((inverse.q25, inverse.q75))
    assert log_summary([0.0, -1.0, None]).n == 0


def test_a_reversed_head_counts_as_semantic_with_its_sign():
    assert two_sided(0.08) == (pytest.approx(0.92), -1)
    assert two_sided(0.95) == (0.95, 1)
    knobs = {"name": "x", "n_heads": 2}
    analysis = {
        "semantics": [
            {"auc_alone": 0.05, "solo": {"l_acc": 0.5}, "scaled": {"l_acc": 0.5}},
            {"auc_alone": 0.6, "solo": {"l_acc": 0.7}, "scaled": {"l_acc": 0.6}},
        ],
        "attention": {"w_01": [1.0, 3.0], "w_02": [0.05, 1.0], "bos_weight": [0.1, 0.2]},
        "aggregation": {"alpha_fitted_raw": [-3.0, 1.0], "sigma": [2.0, 1.0]},
    }
    rows = head_rows(knobs, 0, 10, analysis)
    assert rows[0]["semantic"] and rows[0]["auc_sign"] == -1 and rows[0]["counting"]
    assert not rows[1]["semantic"]
    assert rows[0]["fitted_share"] == pytest.approx(0.75) and rows[0]["fitted_sign"] == -1
    assert rows[0]["rank"] == 1


def _stats(semantic, gap, n_eff, H=4):
    iv = lambda lo, hi: Interval((lo + hi) / 2, lo, hi, 8)  # noqa: E731
    return {"n_heads": H, "semantic_fraction": iv(*semantic), "gap": iv(*gap),
            "n_eff_fitted": iv(*n_eff)}  # fmt: skip


@pytest.mark.parametrize(
    "semantic, gap, n_eff, key",
    [
        ((0.9, 1.0), (0.0, 0.005), (3.0, 3.5), "ensemble"),
        ((0.9, 1.0), (0.03, 0.08), (2.0, 3.0), "weighted"),
        ((0.2, 0.4), (0.03, 0.08), (1.1, 1.3), "one"),
        ((0.4, 0.7), (0.03, 0.08), (1.7, 2.2), "subset"),
        ((0.4, 0.7), (0.0, 0.008), (1.7, 2.2), "subset_equal"),
        ((0.6, 0.9), (0.03, 0.08), (2.0, 3.0), "undecided"),
        ((0.9, 1.0), (0.0, 0.05), (2.0, 3.0), "undecided"),
        ((0.9, 1.0), (0.03, 0.08), (1.2, 2.0), "undecided"),
    ],
)
def test_verdict_rules(semantic, gap, n_eff, key):
    v = verdict(_stats(semantic, gap, n_eff))
    assert v["key"] == key
    assert all("rule" in r and "holds" in r for r in v["rules"])
    if key == "undecided":
        assert "not decided by these seeds" in v["sentence"] and not v["sure"]
    else:
        assert v["sure"]


def test_a_claim_is_mixed_when_cells_disagree_and_by_construction_is_labelled():
    iv = lambda v: Interval(v, v - 0.01, v + 0.01, 8)  # noqa: E731
    base = {k: iv(0.0) for k in ("gap", "fitted_vs_trained", "scaled_below_model",
                                 "top_counting", "ideal_delta_l_acc", "values_mean_delta_l_acc",
                                 "linear_label_l_acc")}  # fmt: skip
    stats = {
        "a": {**base, "n_heads": 4, "semantic_fraction": iv(0.95)},
        "b": {**base, "n_heads": 4, "semantic_fraction": iv(0.3)},
    }
    out = {c["claim"]: c for c in claims(stats)}
    first = next(c for c in out.values() if c["claim"].startswith("Every head"))
    assert first["status"] == "mixed: 1 supported, 1 not supported"
    assert any(c["status"] == "by construction" for c in out.values())
