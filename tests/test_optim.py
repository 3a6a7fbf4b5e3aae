"""AdamW, the learning-rate schedules and gradient clipping (minicount/optim.py) against the
formulas written out in float64: Loshchilov & Hutter's AdamW with bias correction and
decoupled weight decay (on every parameter: the code excludes none), the schedules' stated
shape (linear warm-up, then constant or a cosine down to 10% of lr), and clipping that
takes each ensemble member's own global norm."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicount.optim import CLIP_EPS, AdamW, clip_grads, grad_norms, lr_at

moderate = st.floats(-10, 10, allow_subnormal=False)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def adamw_by_hand(p, grads, lrs, *, beta1, beta2, eps, weight_decay):
    """The AdamW updates one element at a time, in plain Python floats."""
    p = list(p)
    m, v = [0.0] * len(p), [0.0] * len(p)
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        for j in range(len(p)):
            m[j] = beta1 * m[j] + (1 - beta1) * g[j]
            v[j] = beta2 * v[j] + (1 - beta2) * g[j] ** 2
            m_hat = m[j] / (1 - beta1**t)
            v_hat = v[j] / (1 - beta2**t)
            p[j] = p[j] - lr * (m_hat / (math.sqrt(v_hat) + eps) + weight_decay * p[j])
    return p, m, v


@given(
    data=st.data(),
    shape=shapes,
    steps=st.integers(1, 5),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.5, 0.9999),
    eps=st.sampled_from([1e-8, 1e-3, 0.5]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
    lr=st.floats(1e-4, 1.0),
)
def test_adamw_steps_follow_the_formulas(data, shape, steps, beta1, beta2, eps, weight_decay, lr):
    p0 = data.draw(hnp.arrays(np.float64, shape, elements=moderate))
    grads = [data.draw(hnp.arrays(np.float64, shape, elements=moderate)) for _ in range(steps)]
    # each step either the optimiser's own lr or a schedule's override
    overrides = [data.draw(st.one_of(st.none(), st.floats(1e-4, 1.0))) for _ in range(steps)]
    lrs = [lr if o is None else o for o in overrides]
    opt = AdamW(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    params = {"w": p0.copy()}
    state = opt.init_state(params)
    assert state["step"] == 0 and not state["m.w"].any() and not state["v.w"].any()
    for g, o in zip(grads, overrides, strict=True):
        opt.step(params, {"w": g.copy()}, state, lr=o)
    want_p, want_m, want_v = adamw_by_hand(
        p0.ravel(), [g.ravel() for g in grads], lrs,
        beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
    )  # fmt: skip
    assert state["step"] == steps
    np.testing.assert_allclose(state["m.w"].ravel(), want_m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state["v.w"].ravel(), want_v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(params["w"].ravel(), want_p, rtol=1e-9, atol=1e-9)


@given(data=st.data(), M=st.integers(1, 3), shape=shapes, weight_decay=st.sampled_from([0, 0.1]))
def test_an_ensemble_step_is_each_member_stepped_alone(data, M, shape, weight_decay):
    """AdamW is elementwise: a leading model axis changes nothing."""
    p = data.draw(hnp.arrays(np.float64, (M, *shape), elements=moderate))
    g = data.draw(hnp.arrays(np.float64, (M, *shape), elements=moderate))
    opt = AdamW(lr=0.05, weight_decay=weight_decay)
    ens = {"w": p.copy(), "b": p[..., :1].copy()}
    state = opt.init_state(ens)
    opt.step(ens, {"w": g, "b": g[..., :1]}, state)
    for i in range(M):
        alone = {"w": p[i].copy(), "b": p[i][..., :1].copy()}
        s = opt.init_state(alone)
        opt.step(alone, {"w": g[i], "b": g[i][..., :1]}, s)
        for k in alone:
            np.testing.assert_array_equal(ens[k][i], alone[k])


@given(
    data=st.data(),
    M=st.integers(1, 4),
    max_norm=st.floats(0.01, 20),
    ensemble=st.booleans(),
)
def test_clipping_scales_each_model_to_at_most_max_norm(data, M, max_norm, ensemble):
    lead = (M,) if ensemble else ()
    grads = {
        name: data.draw(hnp.arrays(np.float64, lead + shape, elements=moderate))
        for name, shape in [("a", (3,)), ("b", (2, 2)), ("c", (1,))]
    }
    before = {k: v.copy() for k, v in grads.items()}
    models = range(M) if ensemble else [None]
    pick = (lambda g, i: g) if not ensemble else (lambda g, i: g[i])
    want = [
        math.sqrt(sum(float(x) ** 2 for g in before.values() for x in pick(g, i).ravel()))
        for i in models
    ]
    norms = clip_grads(grads, max_norm, ensemble=ensemble)
    np.testing.assert_allclose(np.ravel(norms), want, rtol=1e-12)
    for i, norm in zip(models, want, strict=True):
        after = math.sqrt(sum(float(x) ** 2 for g in grads.values() for x in pick(g, i).ravel()))
        assert after <= max_norm * (1 + 1e-9)
        if norm + CLIP_EPS <= max_norm:  # left alone
            for k in grads:
                np.testing.assert_array_equal(pick(grads[k], i), pick(before[k], i))
        else:  # scaled down along its own direction, to max_norm * norm / (norm + CLIP_EPS)
            assert after == pytest.approx(max_norm * norm / (norm + CLIP_EPS), rel=1e-9)
            for k in grads:
                np.testing.assert_allclose(pick(grads[k], i) * norm, pick(before[k], i) * after,
                                           rtol=1e-9, atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(np.ravel(grad_norms(before, ensemble)), want, rtol=1e-12)


@given(
    lr=st.floats(1e-5, 1.0),
    total=st.integers(1, 300),
    warmup=st.integers(0, 50),
    schedule=st.sampled_from(["constant", "cosine"]),
)
def test_schedules_have_their_stated_shape(lr, total, warmup, schedule):
    """Warm-up climbs linearly to lr at step warmup - 1; then constant holds lr, and the
    cosine falls monotonically from lr to 10% of lr at step total_steps and stays there."""
    rates = [lr_at(s, lr=lr, total_steps=total, warmup=warmup, schedule=schedule)
             for s in range(total + 5)]  # fmt: skip
    for s in range(min(warmup, total + 5)):
        assert rates[s] == pytest.approx(lr * (s + 1) / warmup)
    after = rates[warmup:]
    for r in after:
        assert 0.1 * lr * (1 - 1e-12) <= r <= lr * (1 + 1e-12)
    if not after:
        return
    assert after[0] == pytest.approx(lr)
    if schedule == "constant":
        assert all(r == lr for r in after)
        return
    assert all(a >= b - 1e-15 for a, b in zip(after[:-1], after[1:], strict=True))
    if total - warmup >= 1:  # 10% of lr from step total_steps on
        assert rates[total:] == pytest.approx([0.1 * lr] * len(rates[total:]))
    if total - warmup >= 2 and (total - warmup) % 2 == 0:  # half way: the cosine's mean
        assert rates[warmup + (total - warmup) // 2] == pytest.approx(0.55 * lr)


# ---------------------------------------------------------------- fixed examples


def test_adamw_matches_formula():
    """One AdamW step against the update written out directly."""
    r = np.random.default_rng(0)
    p0, g = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    params, grads = {"w": p0.copy()}, {"w": g}
    opt = AdamW(lr=0.1, weight_decay=0.5)
    state = opt.init_state(params)
    opt.step(params, grads, state)
    m, v = 0.1 * g, 0.001 * g * g
    mhat, vhat = m / 0.1, v / 0.001
    expected = p0 * (1 - 0.1 * 0.5) - 0.1 * mhat / (np.sqrt(vhat) + 1e-8)
    np.testing.assert_allclose(params["w"], expected, rtol=1e-12)


def test_clipping_is_per_member():
    grads = {"a": np.array([[3.0, 4.0], [0.3, 0.4]])}  # member norms 5 and 0.5
    norms = clip_grads(grads, 1.0, ensemble=True)
    np.testing.assert_allclose(norms, [5.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(grads["a"], axis=1), [1.0, 0.5], rtol=1e-5)


def test_schedules():
    assert lr_at(0, lr=1.0, total_steps=100, warmup=10) == pytest.approx(0.1)
    assert lr_at(50, lr=1.0, total_steps=100) == 1.0
    assert lr_at(99, lr=1.0, total_steps=100, schedule="cosine") == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(ValueError):
        lr_at(0, lr=1.0, total_steps=10, schedule="linear")


@pytest.mark.parametrize("norm", [1.0, 1.0 - 5e-7, 1.0 + 5e-7])
def test_clipping_at_the_boundary_follows_pytorchs_rule(norm):
    """A norm within CLIP_EPS of max_norm (the case hypothesis found in CI: a gradient [1] with
    max_norm 1) is scaled by max_norm / (norm + CLIP_EPS), never left above max_norm."""
    grads = {"a": np.array([norm])}
    clip_grads(grads, 1.0, ensemble=False)
    assert grads["a"][0] == pytest.approx(norm / (norm + CLIP_EPS), rel=1e-12)
    assert grads["a"][0] <= 1.0
