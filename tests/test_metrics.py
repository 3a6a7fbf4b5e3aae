"""The study's metrics (minicount/metrics.py) against their definitions (docs/method.md §3),
written out by brute force: ROC AUC as the share of (positive, negative) pairs ranked right,
ties one half; l-acc and s-acc by a loop over positions and sequences; the loss as the mean
binary cross-entropy over the real positions and the vocabulary. The batched forms against
the single ones."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicount as mc
from minicount.data import EOS, V
from minicount.metrics import (
    accuracies_batched,
    metrics_from_logits,
    metrics_from_scores,
    roc_auc,
    roc_auc_batched,
    sequence_bounds,
)

# few distinct values (many ties), -0.0 beside +0.0
few_values = st.sampled_from([-2.0, -0.5, -0.0, 0.0, 0.5, 1.0, 3.0])


def pairwise_auc(scores, labels) -> float:
    """P(a positive's score > a negative's), ties counted one half, over every pair."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def loop_metrics(scores, labels, mask) -> dict:
    """l-acc and s-acc by looping: a decision is s > 0; a sequence is right when every one of
    its real positions is (one without real positions has nothing wrong)."""
    right_positions = total_positions = right_sequences = 0
    real_scores, real_labels = [], []
    for b in range(scores.shape[0]):
        all_right = True
        for t in range(scores.shape[1]):
            if not mask[b, t]:
                continue
            right = bool(scores[b, t] > 0) == bool(labels[b, t])
            right_positions += right
            total_positions += 1
            all_right = all_right and right
            real_scores.append(float(scores[b, t]))
            real_labels.append(bool(labels[b, t]))
        right_sequences += all_right
    return {
        "l_acc": right_positions / total_positions,
        "s_acc": right_sequences / scores.shape[0],
        "roc_auc": pairwise_auc(real_scores, real_labels),
    }


@st.composite
def scored_batches(draw, max_b=5, max_t=6):
    """(scores [B, T], labels [B, T], mask [B, T]) with at least one real position."""
    B, T = draw(st.integers(1, max_b)), draw(st.integers(1, max_t))
    scores = draw(hnp.arrays(np.float64, (B, T), elements=few_values))
    labels = draw(hnp.arrays(np.bool_, (B, T)))
    mask = draw(hnp.arrays(np.bool_, (B, T)))
    mask[draw(st.integers(0, B - 1)), draw(st.integers(0, T - 1))] = True
    return scores, labels, mask


@given(
    scores=st.lists(few_values, min_size=0, max_size=20),
    data=st.data(),
)
def test_roc_auc_is_the_share_of_pairs_ranked_right(scores, data):
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    want = pairwise_auc(scores, labels)
    got = roc_auc(scores, labels)
    if math.isnan(want):  # one class absent
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)


@given(
    scores=st.lists(st.integers(-1000, 1000).map(lambda i: i / 8), min_size=2, max_size=20),
    data=st.data(),
)
def test_roc_auc_of_reversed_scores_is_one_minus_it_and_monotone_maps_keep_it(scores, data):
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    labels[0], labels[1] = True, False  # both classes present
    s = np.array(scores)
    auc = roc_auc(s, labels)
    assert 0.0 <= auc <= 1.0
    assert roc_auc(-s, labels) == pytest.approx(1.0 - auc, abs=1e-12)
    assert roc_auc(np.arctan(s / 1e3) * 7 + 2, labels) == pytest.approx(auc, abs=1e-12)


@given(scored_batches())
def test_l_acc_s_acc_and_auc_against_a_loop(batch):
    scores, labels, mask = batch
    got = metrics_from_scores(scores, labels, mask)
    want = loop_metrics(scores, labels, mask)
    assert set(got) == {"l_acc", "s_acc", "roc_auc"}
    for k, v in want.items():
        if math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, abs=1e-12), k


@given(scored_batches(max_b=4, max_t=5), st.data())
def test_metrics_from_logits_against_the_definitions(batch, data):
    """next-set accuracy: every column's decision right at a real position; loss: the mean
    BCE over real positions and all V columns; the rest read off the EOS column."""
    _, _, mask = batch
    B, T = mask.shape
    logits = data.draw(hnp.arrays(np.float64, (B, T, V), elements=few_values))
    targets = data.draw(hnp.arrays(np.bool_, (B, T, V))).astype(np.float64)
    got = metrics_from_logits(logits, targets, mask)
    want = loop_metrics(logits[..., EOS], targets[..., EOS] > 0.5, mask)
    for k, v in want.items():
        if math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, abs=1e-12), k
    right = terms = loss = 0.0
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            right += all((logits[b, t, j] > 0) == (targets[b, t, j] > 0.5) for j in range(V))
            for j in range(V):
                p = 1.0 / (1.0 + math.exp(-logits[b, t, j]))
                y = targets[b, t, j]
                loss -= y * math.log(p) + (1 - y) * math.log(1 - p)
                terms += 1
    assert got["next_set_acc"] == pytest.approx(right / mask.sum(), abs=1e-12)
    assert got["loss"] == pytest.approx(loss / terms, rel=1e-9)


def test_evaluate_on_an_ensemble_is_evaluate_on_each_member():
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    ens = mc.init_ensemble(config, [0, 1, 2], dtype=np.float64)
    tokens, targets, mask = mc.data.sample_batch(16, 6, np.random.default_rng(0))
    together = mc.evaluate(ens, tokens, targets, mask, config, chunk=5)
    for i, single in enumerate(mc.members(ens)):
        alone = mc.evaluate(single, tokens, targets, mask, config)
        logits = mc.forward(single, tokens, config)
        assert alone == pytest.approx(metrics_from_logits(logits, targets, mask), nan_ok=True)
        for k, v in alone.items():
            assert together[k][i] == pytest.approx(v, rel=1e-9, nan_ok=True), k


# ---------------------------------------------------------------- ties, by a pairwise count


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


# ---------------------------------------------------------------- many score rows at once


@given(
    st.integers(1, 5),
    st.integers(1, 40),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
def test_batched_auc_equals_roc_auc_with_ties(rows, n, dtype, seed):
    rng = np.random.default_rng(seed)
    scores = (rng.integers(-3, 4, (rows, n)) * rng.choice([0.5, 1e-3, 1e30])).astype(dtype)
    scores[rng.random((rows, n)) < 0.2] *= -0.0  # -0.0 ties with +0.0
    labels = rng.random(n) < rng.random()
    got = roc_auc_batched(scores, labels)
    want = np.array([roc_auc(s, labels) for s in scores])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)  # nan where a class is absent
    per_row = rng.random((rows, n)) < 0.5  # labels per row too
    want = np.array([roc_auc(s, y) for s, y in zip(scores, per_row, strict=True)])
    np.testing.assert_allclose(roc_auc_batched(scores, per_row, block=7), want, atol=1e-12)


@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_batched_metrics_equal_metrics_from_scores(B, T, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-2, 3, (3, B, T)).astype(np.float32)
    labels, mask = rng.random((B, T)) < 0.5, rng.random((B, T)) < 0.7
    mask[0, 0] = True
    real, y = scores[..., mask], labels[mask]  # [3, N], [N]: as analyze_ensemble reads them
    l_acc, s_acc = accuracies_batched(real, y, *sequence_bounds(mask))
    got = {"l_acc": l_acc, "s_acc": s_acc, "roc_auc": roc_auc_batched(real, y)}
    for i in range(3):
        want = metrics_from_scores(scores[i], labels, mask)
        for k, v in want.items():
            np.testing.assert_allclose(got[k][i], v, rtol=0, atol=1e-12, err_msg=k)


def test_evaluate_keeps_each_chunks_attention_within_its_budget(monkeypatch):
    # an ensemble's attention scores are [M, b, H, T, T]: the chunk b shrinks as M and T grow
    from minicount import metrics, model

    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    ens = mc.init_ensemble(config, [0, 1, 2, 3], dtype=np.float64)
    tokens, targets, mask = mc.data.sample_batch(40, 9, np.random.default_rng(1))
    want = mc.evaluate(ens, tokens, targets, mask, config, chunk=len(tokens))
    T = tokens.shape[1]
    monkeypatch.setattr(metrics, "EVAL_BYTES", 4 * config.n_heads * T * T * 4 * 7)  # b = 7
    seen = []
    forward = model.forward
    monkeypatch.setattr(
        metrics, "forward", lambda p, t, *a, **k: seen.append(len(t)) or forward(p, t, *a, **k)
    )
    got = mc.evaluate(ens, tokens, targets, mask, config)
    assert seen == [7, 7, 7, 7, 7, 5]
    seen.clear()
    monkeypatch.setattr(metrics.limits, "EVAL_STRINGS", 16)  # the cap, under a large budget
    monkeypatch.setattr(metrics, "EVAL_BYTES", 2**40)
    mc.evaluate(ens, tokens, targets, mask, config)
    assert seen == [16, 16, 8]
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-12, err_msg=k)
