import numpy as np
import pytest

import minicount as mc
from minicount.optim import AdamW, clip_grads, lr_at


def test_default_model_learns_to_count():
    """The study's default model reaches l-acc = s-acc = 1 on held-out strings
    (docs/method.md §2)."""
    params, history = mc.train(mc.ModelConfig(), steps=400, seed=0, eval_every=0)
    final = history["eval"][-1]
    assert final["l_acc"] == 1.0 and final["s_acc"] == 1.0, final
    assert final["roc_auc"] == 1.0
    # and it did so by learning: the first losses were far higher
    assert np.mean(history["loss"][:10]) > 10 * np.mean(history["loss"][-10:])
    tokens, targets, mask = mc.data.eval_set(mc.data.DataConfig(max_len=32, eval_seed=999))
    fresh = mc.evaluate(params, tokens, targets, mask, mc.ModelConfig())
    assert fresh["l_acc"] == 1.0


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 2e-3)])
def test_ensemble_member_matches_single_run(dtype, rtol):
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4, layernorm=True)
    kw = dict(
        steps=25,
        batch_size=32,
        max_len=12,
        eval_every=0,
        n_eval=64,
        dtype=dtype,
        weight_decay=0.01,
        grad_clip=1.0,
    )
    ens, _ = mc.train(config, seed=[3, 5], **kw)
    for i, s in enumerate([3, 5]):
        single, _ = mc.train(config, seed=s, **kw)
        for k in single:
            np.testing.assert_allclose(ens[k][i], single[k], rtol=rtol, atol=rtol * 1e-2)


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


def test_checkpoint_roundtrip(tmp_path):
    config = mc.ModelConfig(layernorm=True, mlp=True, pos_emb=True)
    params = mc.init_params(config, 5)
    path = mc.save(tmp_path / "m.npz", params, config)
    loaded, config2 = mc.load(path)
    assert config2 == config
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k])


def test_training_writes_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    params, history = mc.train(
        mc.ModelConfig(), steps=5, batch_size=8, eval_every=0, n_eval=32, checkpoint=str(path)
    )
    ck = mc.load_checkpoint(path)
    assert ck["info"]["step"] == 5 and ck["opt_state"]["step"] == 5
    assert set(ck["opt_state"]) == {"step"} | {p + k for k in params for p in ("m.", "v.")}
    for k in params:
        np.testing.assert_array_equal(ck["params"][k], params[k])


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated"])
def test_bad_checkpoints_are_rejected(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint"):
        mc.load(path)


def test_foreign_npz_is_rejected(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a minicount checkpoint"):
        mc.load(path)


def test_shared_data_seed_member_matches_single_run():
    """With data_seed, every member sees the same batches: member i = seed i alone with that
    data_seed, and differs from the run where each seed draws its own batches."""
    config = mc.ModelConfig(d_model=16, n_heads=2, d_head=4)
    kw = dict(steps=15, batch_size=16, max_len=10, eval_every=0, n_eval=32, dtype="float64")
    ens, _ = mc.train(config, seed=[1, 2], data_seed=7, **kw)
    own, _ = mc.train(config, seed=[1, 2], **kw)
    for i, s in enumerate([1, 2]):
        single, _ = mc.train(config, seed=s, data_seed=7, **kw)
        for k in single:
            np.testing.assert_allclose(ens[k][i], single[k], rtol=1e-9, atol=1e-12)
    assert not np.allclose(ens["unembed.W_U"], own["unembed.W_U"])


def test_shared_data_resumes_exactly(tmp_path):
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    kw = dict(batch_size=8, max_len=8, eval_every=0, n_eval=16, seed=[0, 1], data_seed=3)
    whole, _ = mc.train(config, steps=8, **kw)
    ck = tmp_path / "half.npz"
    mc.train(config, steps=4, checkpoint=str(ck), **kw)
    resumed, _ = mc.train(config, steps=8, resume=str(ck), **kw)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k])
