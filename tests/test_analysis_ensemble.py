"""analyze_ensemble against analyze_model on every member (the batched metrics under it:
test_metrics.py).

The equality tests run in float64, where the batched and the per-model paths may differ
only by rounding (1e-12 relative); one test compares a float32 ensemble, where a decision
on a score within rounding of 0 may flip, with a looser tolerance.
"""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicount as mc
from minicount.analysis import (
    ablated_logits,
    analyze_ensemble,
    analyze_model,
    result_means,
)
from minicount.analysis.scoring import eos_metrics
from minicount.data import DataConfig, eval_set
from minicount.model import members


def assert_same(ref, got, *, rtol, atol, path="result"):
    """Every leaf of got equals ref's: same keys, lengths, None where None, numbers close."""
    if isinstance(ref, dict):
        assert isinstance(got, dict), path
        assert list(got) == list(ref), f"{path}: keys {list(got)} != {list(ref)}"
        for k in ref:
            assert_same(ref[k], got[k], rtol=rtol, atol=atol, path=f"{path}.{k}")
    elif isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref), f"{path}: {got!r} vs {ref!r}"
        for i, (r, g) in enumerate(zip(ref, got, strict=True)):
            assert_same(r, g, rtol=rtol, atol=atol, path=f"{path}[{i}]")
    elif ref is None or isinstance(ref, (bool, str)):
        assert got == ref and type(got) is type(ref), f"{path}: {got!r} != {ref!r}"
    else:
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{path}: {got!r}"
        assert abs(got - ref) <= atol + rtol * abs(ref), f"{path}: {got!r} != {ref!r}"


def held_out(bos=True, n_eval=96, max_len=10):
    return eval_set(DataConfig(max_len=max_len, n_eval=n_eval, bos=bos))


def test_the_comparer_can_fail():
    assert_same({"a": [1.0, None]}, {"a": [1.0, None]}, rtol=0, atol=0)
    for bad in ({"a": [1.1, None]}, {"a": [1.0, 0.0]}, {"b": [1.0, None]}, {"a": [1.0]}):
        with pytest.raises(AssertionError):
            assert_same({"a": [1.0, None]}, bad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "n_heads, pos_emb, bos",
    [(1, False, True), (2, True, False), (3, False, False), (4, True, True), (8, False, True)],
)
def test_ensemble_equals_each_member_alone(n_heads, pos_emb, bos):
    config = mc.ModelConfig(d_model=16, n_heads=n_heads, d_head=4, pos_emb=pos_emb, n_ctx=16)
    params = mc.init_ensemble(config, [3, 4], dtype=np.float64)
    tokens, targets, mask = held_out(bos, n_eval=48 if n_heads == 8 else 96)
    got = analyze_ensemble(params, tokens, targets, mask, config)
    assert len(got) == 2
    for i, member in enumerate(members(params)):
        ref = analyze_model(member, tokens, targets, mask, config)
        assert_same(ref, got[i], rtol=1e-7, atol=1e-9, path=f"member {i}")


def test_options_are_passed_on():
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4)
    params = mc.init_ensemble(config, [0, 1], dtype=np.float64)
    tokens, targets, mask = held_out()
    kw = {"subsets": False, "interventions": False, "l2": 1e-2}
    got = analyze_ensemble(params, tokens, targets, mask, config, **kw)
    assert "interventions" not in got[0]
    assert {row["kind"] for row in got[0]["ablation"]["zero"]} == {"only", "leave_out"}
    ref = analyze_model(members(params)[1], tokens, targets, mask, config, **kw)
    assert_same(ref, got[1], rtol=1e-7, atol=1e-9)


@pytest.fixture(scope="module")
def trained():
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4)
    params, _ = mc.train(
        config, seed=[0, 1, 2], steps=50, batch_size=64, max_len=10, n_eval=64, eval_every=50
    )
    return config, params


def test_trained_ensemble_in_float64(trained):
    config, params = trained
    params = {k: v.astype(np.float64) for k, v in params.items()}
    tokens, targets, mask = held_out()
    got = analyze_ensemble(params, tokens, targets, mask, config)
    for i, member in enumerate(members(params)):
        ref = analyze_model(member, tokens, targets, mask, config)
        assert_same(ref, got[i], rtol=1e-7, atol=1e-9, path=f"member {i}")


def test_trained_ensemble_in_float32(trained):
    # a decision on a score within float32 rounding of 0 may flip: allow a few positions
    config, params = trained
    tokens, targets, mask = held_out()
    got = analyze_ensemble(params, tokens, targets, mask, config)
    for i, member in enumerate(members(params)):
        ref = analyze_model(member, tokens, targets, mask, config)
        assert_same(ref, got[i], rtol=1e-3, atol=3e-3, path=f"member {i}")


def test_subsets_match_the_hooked_forward_pass():
    # every subset, both modes, against ablated_logits (a forward pass with the heads
    # replaced), not against the decomposition both analyses share
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=4, pos_emb=True, n_ctx=16)
    params = mc.init_ensemble(config, [5, 6], dtype=np.float64)
    tokens, targets, mask = held_out(n_eval=64)
    got = analyze_ensemble(params, tokens, targets, mask, config, interventions=False)
    for i, member in enumerate(members(params)):
        means = result_means(member, tokens, mask, config)
        rows = {
            mode: {tuple(r["kept"]): r for r in got[i]["ablation"][mode] if r["kind"] == "subset"}
            for mode in ("zero", "mean")
        }
        for r in range(4):
            for kept in combinations(range(3), r):
                keep = [h in kept for h in range(3)]
                for mode, fill in (("zero", None), ("mean", means)):
                    logits = ablated_logits(member, tokens, config, keep, fill=fill)
                    want = eos_metrics(logits[..., mc.data.EOS], targets, mask)
                    assert_same(want, {k: rows[mode][kept][k] for k in want}, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("change", [{"n_layers": 2}, {"layernorm": True}, {"mlp": True}])
def test_inexact_configs_are_refused(change):
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4, **change)
    params = mc.init_ensemble(config, [0, 1])
    tokens, targets, mask = held_out(n_eval=8)
    with pytest.raises(ValueError, match="exact.*" + next(iter(change))):
        analyze_ensemble(params, tokens, targets, mask, config)


def test_single_models_and_empty_ensembles_are_refused():
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4)
    tokens, targets, mask = held_out(n_eval=8)
    with pytest.raises(ValueError, match="leading model axis"):
        analyze_ensemble(mc.init_params(config, 0), tokens, targets, mask, config)
    empty = {k: v[:0] for k, v in mc.init_ensemble(config, [0]).items()}
    with pytest.raises(ValueError, match="empty"):
        analyze_ensemble(empty, tokens, targets, mask, config)


# ------------------------------------------------------------------ attention edits


def _class_sums(pattern, vu, tok):
    """S, C [..., T, 4] the simple way: the pattern's weight (times vu) on the keys of
    tokens 0, 1, 2 and of every other token, one class at a time."""
    from minicount.data import ONE, TWO, ZERO

    classes = [tok == ZERO, tok == ONE, tok == TWO]
    classes.append(~(classes[0] | classes[1] | classes[2]))
    S = np.stack([(pattern * k[:, None, None, :]).sum(-1) for k in classes], axis=-1)
    C = np.stack([(pattern * vu[..., None, :] * k[:, None, None, :]).sum(-1) for k in classes], -1)
    return S, C


@given(
    st.integers(1, 3),
    st.integers(1, 9),
    st.floats(0.01, 8.0),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_edits_from_pattern_sums_equal_the_edited_softmaxes(b, T, scale, bos, seed):
    from minicount.analysis.ensemble import _edited_by_softmax, _edited_from_sums
    from minicount.fast.attention import causal_softmax

    rng = np.random.default_rng(seed)
    tok = rng.integers(0, 3, (b, T))
    if bos:
        tok[:, 0] = mc.data.BOS
    tok[rng.random((b, T)) < 0.1] = mc.data.PAD
    scores = rng.normal(0.0, scale, (2, b, 3, T, T))  # [M, b, H, T, T]
    vu = rng.normal(size=(2, b, 3, T))
    S, C = _class_sums(causal_softmax(scores), vu, tok)
    got = _edited_from_sums(S, C, tok, np.ones((b, T), bool))
    want = _edited_by_softmax(scores, vu, tok)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_edits_from_sums_refuse_an_underflowed_pattern():
    # a 1-key whose weight underflows: the ratio of means cannot be read off the pattern
    from minicount.analysis.ensemble import _edited_from_sums
    from minicount.fast.attention import causal_softmax

    tok = np.array([[mc.data.BOS, 0, 1, 2]])
    scores = np.zeros((1, 1, 1, 4, 4))
    scores[..., 2] = -800.0  # exp(-800) is 0 in float64
    vu = np.ones((1, 1, 1, 4))
    S, C = _class_sums(causal_softmax(scores), vu, tok)
    real = np.ones((1, 4), bool)
    assert _edited_from_sums(S, C, tok, real) is None
    assert _edited_from_sums(S, C, tok, real & [True, True, False, False]) is not None


def test_ensemble_through_the_edited_softmaxes(monkeypatch):
    # where _edited_from_sums refuses (an underflowed weight, see above) the edited
    # softmaxes are taken instead: forced here on every chunk, the result is unchanged
    from minicount.analysis import ensemble

    calls = []
    by_softmax = ensemble._edited_by_softmax
    monkeypatch.setattr(ensemble, "_edited_from_sums", lambda *a: None)
    monkeypatch.setattr(
        ensemble, "_edited_by_softmax", lambda *a: calls.append(1) or by_softmax(*a)
    )
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=4)
    params = mc.init_ensemble(config, [7, 8], dtype=np.float64)
    tokens, targets, mask = held_out(n_eval=48)
    got = analyze_ensemble(params, tokens, targets, mask, config)
    assert calls
    for i, member in enumerate(members(params)):
        ref = analyze_model(member, tokens, targets, mask, config)
        assert_same(ref, got[i], rtol=1e-7, atol=1e-9, path=f"member {i}")


@pytest.mark.parametrize("threads", ["1", "3"])
def test_threads_share_out_the_same_work(monkeypatch, threads):
    # the chunks and the groups of models change with the thread count, the result does not
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=4)
    params = mc.init_ensemble(config, [0, 1, 2, 3], dtype=np.float64)
    tokens, targets, mask = held_out(n_eval=48)
    monkeypatch.setenv("MINICOUNT_THREADS", "2")
    want = analyze_ensemble(params, tokens, targets, mask, config)
    monkeypatch.setenv("MINICOUNT_THREADS", threads)
    got = analyze_ensemble(params, tokens, targets, mask, config)
    assert_same(want, got, rtol=1e-12, atol=1e-12)
