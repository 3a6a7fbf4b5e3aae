import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicount import data
from minicount.data import BOS, EOS, PAD, V

strings = st.text(alphabet="012", min_size=0, max_size=40)


def brute_force_targets(w: str, bos: bool) -> np.ndarray:
    """The next-set target of every position, by counting each prefix from scratch."""
    rows = []
    prefixes = range(0, len(w) + 1) if bos else range(1, len(w) + 1)
    for t in prefixes:
        p = w[:t]
        row = np.zeros(V)
        row[:3] = 1
        row[EOS] = float(p.count("1") > p.count("0"))
        rows.append(row)
    return np.array(rows)


@given(strings)
def test_encode_decode_roundtrip(w):
    tokens = data.encode(w)
    assert tokens[0] == BOS and len(tokens) == len(w) + 1
    assert data.decode(tokens) == w
    assert data.decode(data.encode(w, bos=False)) == w


@given(st.text(min_size=1, max_size=10).filter(lambda s: set(s) - set("012")))
def test_encode_rejects_other_symbols(w):
    with pytest.raises(ValueError, match="0, 1, 2"):
        data.encode(w)


def test_membership_examples():
    assert data.in_count01("1") and data.in_count01("2112") and data.in_count01("101")
    assert not data.in_count01("") and not data.in_count01("10") and not data.in_count01("222")


@given(st.lists(strings, min_size=1, max_size=6), st.booleans())
def test_targets_match_brute_force(words, bos):
    words = [w for w in words if w or bos] or ["1"]
    T = max(len(w) for w in words) + int(bos)
    tokens = np.full((len(words), T), PAD)
    for i, w in enumerate(words):
        enc = data.encode(w, bos=bos)
        tokens[i, : len(enc)] = enc
    targets, mask = data.next_set_targets(tokens)
    for i, w in enumerate(words):
        n = len(w) + int(bos)
        assert mask[i, :n].all() and not mask[i, n:].any()
        np.testing.assert_array_equal(targets[i, :n], brute_force_targets(w, bos))
        assert not targets[i, n:].any()


@given(st.integers(0, 2**32 - 1), st.integers(1, 64), st.integers(1, 40), st.booleans())
def test_sampler_strings_are_in_language_and_targets_right(seed, B, max_len, bos):
    tokens, targets, mask = data.sample_batch(B, max_len, np.random.default_rng(seed), bos=bos)
    assert tokens.shape == (B, max_len + int(bos)) and targets.shape == tokens.shape + (V,)
    for i in range(B):
        w = data.decode(tokens[i])
        assert 1 <= len(w) <= max_len and data.in_count01(w)
        n = len(w) + int(bos)
        np.testing.assert_array_equal(targets[i, :n], brute_force_targets(w, bos))
        assert mask[i].sum() == n


def test_seed_reproduces_batches():
    a = data.sample_batch(64, 16, np.random.default_rng(7))
    b = data.sample_batch(64, 16, np.random.default_rng(7))
    c = data.sample_batch(64, 16, np.random.default_rng(8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_length_distribution_covers_range_and_probs_matter():
    tokens, _, mask = data.sample_batch(4000, 8, np.random.default_rng(0))
    lengths = mask.sum(1) - 1
    assert set(lengths.tolist()) == set(range(1, 9))
    tokens2, _, mask2 = data.sample_batch(4000, 8, np.random.default_rng(0), probs=(0.1, 0.6, 0.3))
    share_of_1 = lambda t, m: ((t == 1) & m).sum() / (m & (t < 3)).sum()  # noqa: E731
    assert share_of_1(tokens2, mask2) > share_of_1(tokens, mask) + 0.1


def test_eval_sets_fixed_and_long():
    cfg = data.DataConfig(max_len=10, n_eval=200)
    a, b = data.eval_set(cfg), data.eval_set(cfg)
    np.testing.assert_array_equal(a[0], b[0])
    long_tokens, _, long_mask = data.eval_set(cfg, long=True)
    lengths = long_mask.sum(1) - 1
    assert lengths.min() >= 11 and lengths.max() <= 20


@pytest.mark.parametrize(
    "bad", [dict(probs=(0.5, 0.5)), dict(probs=(0.5, 0.0, 0.5)), dict(probs=(-0.1, 0.6, 0.5))]
)
def test_sampler_rejects_bad_probs(bad):
    with pytest.raises(ValueError):
        data.sample_batch(4, 4, np.random.default_rng(0), **bad)


def test_sampler_is_vectorised_enough():
    """Many strings in one call: a per-string Python loop would take seconds here."""
    import time

    t = time.perf_counter()
    data.sample_batch(50_000, 32, np.random.default_rng(0))
    assert time.perf_counter() - t < 5.0
