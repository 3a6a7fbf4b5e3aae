"""CuPy against NumPy: same seed, same model, same numbers. Skipped without CuPy and a GPU."""

import numpy as np
import pytest

import minicount as mc
from minicount.backend import to_device, to_numpy

from .conftest import gpu_ok

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_ok(), reason="needs CuPy and a CUDA GPU")]

CONFIGS = [mc.ModelConfig(), mc.ModelConfig(pos_emb=True, layernorm=True, mlp=True, n_layers=2)]
TOLS = {"float64": 1e-10, "float32": 1e-5}


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_backward_match(config, dtype):
    params = mc.init_params(config, 1, dtype=np.dtype(dtype))
    tokens, targets, mask = mc.data.sample_batch(64, 20, np.random.default_rng(0))
    targets = targets.astype(dtype)
    logits_cpu = mc.forward(params, tokens, config)
    loss_cpu, grads_cpu = mc.loss_and_grads(params, tokens, targets, mask, config)
    gp, gbatch = to_device(params, "gpu"), to_device((tokens, targets, mask), "gpu")
    logits_gpu = to_numpy(mc.forward(gp, gbatch[0], config))
    loss_gpu, grads_gpu = mc.loss_and_grads(gp, *gbatch, config)
    assert rel(logits_gpu, logits_cpu) < TOLS[dtype]
    assert abs(loss_gpu - loss_cpu) / abs(loss_cpu) < TOLS[dtype]
    for k in grads_cpu:
        assert rel(to_numpy(grads_gpu[k]), grads_cpu[k]) < TOLS[dtype] * 10, k


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_short_training_run_matches(dtype):
    kw = dict(steps=20, batch_size=64, max_len=16, eval_every=0, n_eval=128, dtype=dtype)
    cpu, _ = mc.train(mc.ModelConfig(), device="cpu", **kw)
    gpu, _ = mc.train(mc.ModelConfig(), device="gpu", **kw)
    tol = 1e-9 if dtype == "float64" else 1e-3  # 20 Adam steps amplify float32 rounding a little
    for k in cpu:
        assert rel(gpu[k], cpu[k]) < tol, k


def test_ensemble_on_gpu_matches_cpu():
    kw = dict(steps=5, batch_size=32, max_len=10, eval_every=0, n_eval=64, dtype="float64")
    cpu, _ = mc.train(mc.ModelConfig(), seed=[0, 1, 2], device="cpu", **kw)
    gpu, _ = mc.train(mc.ModelConfig(), seed=[0, 1, 2], device="gpu", **kw)
    for k in cpu:
        assert rel(gpu[k], cpu[k]) < 1e-9, k


def test_checkpoint_from_gpu_loads_on_cpu(tmp_path):
    config = mc.ModelConfig()
    gp = to_device(mc.init_params(config, 2), "gpu")
    path = mc.save(tmp_path / "g.npz", gp, config)
    params, _ = mc.load(path)
    assert isinstance(params["embed.W_E"], np.ndarray)
    np.testing.assert_array_equal(params["embed.W_E"], to_numpy(gp["embed.W_E"]))


class _Stop(Exception):
    pass


def _stop_at(k):
    def callback(step, params, history):
        if step == k:
            raise _Stop

    return callback


@pytest.mark.parametrize("first,then", [("gpu", "cpu"), ("cpu", "gpu")])
def test_checkpoint_resumes_on_the_other_device(tmp_path, first, then):
    """A run killed on one device continues on the other (float64: the same numbers to 1e-9)."""
    kw = dict(steps=12, batch_size=16, max_len=8, eval_every=6, n_eval=64, dtype="float64")
    ck = tmp_path / "moved.npz"
    with pytest.raises(_Stop):
        mc.train(mc.ModelConfig(), device=first, checkpoint=ck, callback=_stop_at(6), **kw)
    saved = mc.load_checkpoint(ck)
    assert saved["info"]["step"] == 6 and isinstance(saved["params"]["embed.W_E"], np.ndarray)
    assert ("cupy" in saved["info"]["versions"]) == (first == "gpu")
    resumed, _ = mc.train(mc.ModelConfig(), device=then, resume=ck, **kw)
    whole, _ = mc.train(mc.ModelConfig(), device="cpu", **kw)
    for k in whole:
        assert rel(resumed[k], whole[k]) < 1e-9, k


def test_out_of_range_tokens_are_caught_on_gpu():
    """CuPy would not raise for a bad id; the check must."""
    config = mc.ModelConfig()
    gp = to_device(mc.init_params(config, 0), "gpu")
    with pytest.raises(ValueError, match="0..5"):
        mc.forward(gp, to_device(np.array([[3, 0, 9]]), "gpu"), config)
    with pytest.raises(ValueError, match="move them"):
        mc.forward(gp, np.array([[3, 0, 1]]), config)
