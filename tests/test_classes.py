"""Per-model classes (minicount/study/classes.py) and the class-based verdict (verdicts.verdict) on
designed inputs whose answer is known by construction."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicount.stats import proportion_ci
from minicount.study import classes
from minicount.study.verdicts import class_statistics, sensitivity, verdict

aucs = st.lists(st.one_of(st.none(), st.floats(0.5, 1.0)), min_size=1, max_size=8)


@given(aucs, st.floats(0.5, 1.0))
def test_a_model_is_in_exactly_the_class_its_count_of_counting_heads_says(a, cut):
    n = sum(x is not None and x >= cut for x in a)
    c = classes.model_class(a, cut)
    expected = "every" if n == len(a) else "none" if n == 0 else "one" if n == 1 else "some"
    assert c == expected
    assert c != "one" or len(a) > 1  # a lone head that counts is 'every'; one that doesn't, 'none'


def test_class_shares_count_models_and_carry_wilson_intervals():
    models = [[0.99, 0.95, 0.97, 0.92]] * 5 + [[0.99, 0.6, 0.97, 0.92]] * 2 + [[0.99, 0.5, 0.6,
              0.7]]  # fmt: skip
    shares = classes.class_shares(models)
    assert shares["every"].value == 5 / 8 and shares["some"].value == 2 / 8
    assert shares["one"].value == 1 / 8 and shares["none"].value == 0
    assert shares["every"].method == "wilson" and shares["none"].low == 0
    # at a stricter cut the first five drop out of 'every'
    assert classes.class_shares(models, cut=0.96)["every"].value == 0


def history(classes_by_step):
    """{step: {seed: aucs}} from {step: 'EEEN...'} (E: all four heads count, N: one does not)."""
    full, three = [0.99] * 4, [0.99, 0.99, 0.99, 0.6]
    return {s: {i: (full if ch == "E" else three) for i, ch in enumerate(text)}
            for s, text in classes_by_step.items()}  # fmt: skip


def test_churn_counts_entries_and_exits_between_consecutive_snapshots():
    h = history({0: "EEEN", 5000: "EENE", 10000: "EENE", 20000: "NENE"})
    c = classes.churn(h, 0, 20000)
    assert (c["left"], c["entered"]) == (2, 1)  # seed 2 at 5000, seed 0 at 20000; seed 3 in
    assert c["left_per_10k"] == pytest.approx(2 / 4 * 10000 / 20000)
    late = classes.churn(h, 10000, 20000)
    assert (late["left"], late["entered"], late["snapshots"]) == (1, 0, 2)


def test_limit_rule_reads_a_designed_limit_a_mixture_and_an_open_case():
    n = 40
    settled = history({s: "E" * n for s in range(0, 40001, 5000)})
    assert classes.limit_rule(settled)["outcome"] == "equals is the limit"
    # 70% in 'every', four models swapping in and out at every snapshot
    mixed = {}
    for k, s in enumerate(range(0, 40001, 5000)):
        text = ["E"] * 28 + ["N"] * 12
        for j in range(4):
            i = (4 * k + j) % 28
            text[i], text[28 + j] = "N", "E"
        mixed[s] = "".join(text)
    assert classes.limit_rule(history(mixed))["outcome"] == "a stationary mixture"
    rising = history({s: "E" * (20 + s // 2500) + "N" * (20 - s // 2500)
                      for s in range(0, 40001, 5000)})  # fmt: skip
    out = classes.limit_rule(rising)
    assert out["outcome"] == "undecided" and not all(out["mixture"].values())


def test_newcombe_difference_against_its_formula():
    a, b = proportion_ci(27, 32), proportion_ci(15, 32)
    d, low, high = classes.newcombe_difference(a, b)
    assert d == pytest.approx(12 / 32)
    assert low == pytest.approx(d - math.hypot(a.value - a.low, b.high - b.value))
    assert high == pytest.approx(d + math.hypot(a.high - a.value, b.value - b.low))
    assert low < d < high


def rows(n_every, n_one, margin_ratio, gap, H=4):
    """Final model and head rows of a designed cell: n_every models with all heads at AUC 0.99,
    n_one with one head at 0.99 and the rest at 0.55; each with an accuracy gap and a fitted
    margin margin_ratio times the equal-weight one (cycled over the models)."""
    models, heads = [], []
    for seed in range(n_every + n_one):
        auc = [0.99] * H if seed < n_every else [0.99] + [0.55] * (H - 1)
        g = margin_ratio[seed % len(margin_ratio)]
        models.append({"name": "c", "n_heads": H, "seed": seed, "step": 100,
                       "gap_calibrated": gap, "gap": gap, "margin_fitted": 0.08 * g,
                       "margin_calibrated": 0.08, "margin_uniform_logloss": 0.08,
                       "n_eff_fitted": 3.0, "n_eff_trained": 3.0})  # fmt: skip
        heads += [{"name": "c", "seed": seed, "step": 100, "head": h, "auc_two_sided": a}
                  for h, a in enumerate(auc)]  # fmt: skip
    return models, heads


def stats_of(models, heads):
    return {"n_heads": models[0]["n_heads"], **class_statistics(models, heads)}


def test_verdict_of_designed_cells():
    # 30 of 32 models with four counters whose fitted weights widen the margin: every head
    # counts, weighted unequally, decided among perfect counters (gap 0)
    m, h = rows(30, 2, [1.3, 1.4, 1.5], gap=0.0)
    v = verdict(stats_of(m, h))
    assert v["label"] == "every head counts, weighted unequally" and v["sure"]
    # the same with no margin to gain: equal weights of calibrated heads suffice
    m, h = rows(30, 2, [1.0, 1.01, 0.99], gap=0.0)
    assert verdict(stats_of(m, h))["label"] == "every head counts, equal weights suffice"
    # most models carry the decision on one head: compete
    m, h = rows(2, 30, [1.0, 1.01, 0.99], gap=0.0)
    assert verdict(stats_of(m, h))["key"] == "one"
    # half and half at 8 seeds: no class is a majority
    m, h = rows(4, 4, [1.0, 1.01, 0.99], gap=0.0)
    assert verdict(stats_of(m, h))["label"] == "undecided"


def test_margin_ratio_is_a_geometric_mean_with_a_log_scale_interval():
    from minicount.study.verdicts import ratio_ci

    m = [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 2.0}, {"a": 4.0, "b": 1.0}, {"a": 1.0, "b": 0.0}]
    r = ratio_ci(m, "a", "b")  # the last model has no positive equal-weight margin: left out
    assert r.n == 3 and r.value == pytest.approx(2 ** (2 / 3))
    assert r.low * r.high == pytest.approx(r.value**2)  # symmetric on the log scale


def test_sensitivity_names_the_cut_offs_that_move_a_label():
    # 20 of 32 'every' models: a majority whose Wilson lower bound (0.45) is below 0.5, so
    # 'every' does not describe the cell; at AUC 0.5 all heads count and the label moves
    m, h = rows(20, 12, [1.3, 1.4, 1.5], gap=0.0)
    for r in h:
        r["auc_two_sided"] = max(r["auc_two_sided"], 0.82)
    s = sensitivity(stats_of(m, h), m, h)
    assert s["labels"]["AUC 0.8"] == "every head counts, weighted unequally"
    assert s["labels"]["default"] != s["labels"]["AUC 0.8"] and s["stability"] == "flips"
