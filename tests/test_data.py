"""Count01 data (minicount/data.py): encoding, the next-set targets against a brute-force
count, the sampler, and junk in giving the right value or a ValueError."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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


# ---------------------------------------------------- junk in: the value or a ValueError


@given(st.text(max_size=30))
def test_encode_junk_gives_the_ids_or_a_value_error(w):
    if set(w) <= set("012"):
        expected = [BOS] + [int(c) for c in w]  # the symbols are their own ids
        assert data.encode(w).tolist() == expected
    else:
        with pytest.raises(ValueError, match="0, 1, 2"):
            data.encode(w)


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.integers())))
def test_encode_rejects_non_strings(junk):
    with pytest.raises(ValueError, match="string"):
        data.encode(junk)


@given(
    st.one_of(
        st.lists(st.integers(-3, 8), max_size=12),
        st.builds(
            lambda a, dtype: a.astype(dtype),
            hnp.arrays(
                np.int64,
                hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
                elements=st.integers(0, 7),
            ),
            st.sampled_from(["int8", "int64", "uint8", "float32", "bool"]),
        ),
    )
)
def test_decode_junk_gives_the_string_or_a_value_error(ids):
    a = np.asarray(ids)
    valid = a.ndim == 1 and (a.size == 0 or (a.dtype.kind in "iu" and a.min() >= 0 and a.max() < V))
    if not valid:
        with pytest.raises(ValueError):
            data.decode(ids)
        return
    read = a.tolist()
    read = read[: read.index(EOS)] if EOS in read else read  # EOS ends the string
    assert data.decode(ids) == "".join("012"[i] for i in read if i < 3)  # BOS, PAD dropped


junk_ints = st.one_of(
    st.integers(-3, 12), st.floats(-2, 12), st.booleans(), st.none(), st.text(max_size=3)
)


@given(
    batch_size=junk_ints,
    max_len=junk_ints,
    min_len=junk_ints,
    probs=st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
        st.just((0.2, 0.5, 0.3)),
        st.text(max_size=4),
    ),
    bos=st.booleans(),
)
def test_sample_batch_junk_gives_a_batch_or_a_value_error(batch_size, max_len, min_len, probs, bos):
    def whole(x, low):
        return isinstance(x, int) and not isinstance(x, bool) and x >= low

    p = np.asarray(probs, dtype=float) if isinstance(probs, (list, tuple)) else None
    valid = (
        whole(batch_size, 1)
        and whole(max_len, 1)
        and whole(min_len, 1)
        and min_len <= max_len
        and p is not None
        and p.shape == (3,)
        and np.isfinite(p).all()
        and (p >= 0).all()
        and abs(p.sum() - 1) < 1e-6
        and p[1] > 0
    )
    rng = np.random.default_rng(0)
    if not valid:
        with pytest.raises(ValueError):
            data.sample_batch(batch_size, max_len, rng, probs=probs, min_len=min_len, bos=bos)
        return
    tokens, targets, mask = data.sample_batch(
        batch_size, max_len, rng, probs=probs, min_len=min_len, bos=bos
    )
    assert tokens.shape == (batch_size, max_len + bos) and targets.shape == tokens.shape + (V,)
    lengths = mask.sum(1) - bos
    assert ((lengths >= min_len) & (lengths <= max_len)).all()
    for row, n in zip(tokens, lengths, strict=True):  # every string is in the language
        assert data.in_count01(data.decode(row[: n + bos]))
