"""Training (minicount/train.py): it learns to count, an ensemble member equals its seed
alone, settings that cannot work are refused, a killed run resumes to the same bits, and a
NaN or inf stops it with the step and the parameter."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minicount as mc
from minicount import NonFiniteError

from .helpers import ROOT, RUN, SHORT_RUN, TINY, assert_same_params, same_history, train_module


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


# ---------------------------------------------------------------- settings refused before training


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(beta2=1.0), "beta2"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(grad_clip=float("inf")), "grad_clip"),
        (dict(steps=2.5), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(warmup=-1), "warmup"),
        (dict(schedule="linear"), "schedule"),
        (dict(dtype="float16"), "dtype"),
        (dict(device="tpu"), "unknown device"),
        (dict(seed=-1), "seed"),
        (dict(seed=[]), "seed"),
        (dict(probs=(0.5, 0.0, 0.5)), "P\\(1\\)"),
        (dict(probs=(0.5, 0.5)), "probs"),
        (dict(eval_every="10"), "eval_every"),
        (dict(checkpoint_every=-1), "checkpoint_every"),
        (dict(bos="yes"), "bos"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_training(options, match):
    kw = dict(steps=1, batch_size=4, max_len=4, n_eval=8) | options
    with pytest.raises(ValueError, match=match):
        mc.train(TINY, **kw)


def test_gpu_without_cupy_is_a_clear_error():
    if mc.backend.gpu_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="CuPy"):
        mc.train(TINY, steps=1, device="gpu")


# ---------------------------------------------------------------- kill and resume


class Stop(Exception):
    """Stands in for a run killed after a checkpoint."""


def crash_at(monkeypatch, at_step):
    """Make the training loop raise Stop in its step at_step (1-based), as a kill would."""
    real, calls = train_module.loss_and_grads_sliced, []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_step:
            raise Stop
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "loss_and_grads_sliced", patched)


@pytest.mark.parametrize(
    "seed,crash,every,saved_at", [(0, 11, 0, 8), ([1, 2], 17, 0, 16), (3, 14, 5, 10)]
)
def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch, seed, crash, every, saved_at):
    """Checkpoints at evaluations (every 8 steps) and every `every` steps; a crash loses the
    steps since the last one, and the resumed run redoes them to the same bits."""
    whole, whole_history = mc.train(TINY, seed=seed, **RUN)
    ck = tmp_path / "run.npz"
    crash_at(monkeypatch, crash)
    with pytest.raises(Stop):
        mc.train(TINY, seed=seed, checkpoint=ck, checkpoint_every=every, **RUN)
    monkeypatch.undo()
    saved = mc.load_checkpoint(ck)
    assert saved["info"]["step"] == saved_at and saved["opt_state"]["step"] == saved_at
    resumed, history = mc.train(TINY, seed=seed, resume=ck, checkpoint=ck, **RUN)
    assert_same_params(resumed, whole)
    same_history(history, whole_history)
    assert_same_params(mc.load(ck)[0], whole)  # and the final checkpoint holds them too


def test_resume_can_extend_a_finished_run(tmp_path):
    kw = dict(RUN, schedule="constant", eval_every=0)
    ck = tmp_path / "short.npz"
    mc.train(TINY, checkpoint=ck, **(kw | dict(steps=10)))
    longer, _ = mc.train(TINY, resume=ck, **(kw | dict(steps=16)))
    whole, _ = mc.train(TINY, **(kw | dict(steps=16)))
    assert_same_params(longer, whole)
    again, history = mc.train(TINY, resume=ck, **(kw | dict(steps=10)))  # nothing left to do
    assert_same_params(again, mc.load(ck)[0])
    assert len(history["loss"]) == 10 and [e["step"] for e in history["eval"]] == [10]
    with pytest.raises(ValueError, match="at step 10, beyond steps=8"):
        mc.train(TINY, resume=ck, **(kw | dict(steps=8)))


def test_resume_refuses_another_run(tmp_path):
    ck = tmp_path / "a.npz"
    mc.train(TINY, checkpoint=ck, **RUN)
    with pytest.raises(ValueError, match="lr=0.01 vs 0.02"):
        mc.train(TINY, resume=ck, **(RUN | dict(lr=0.02)))
    with pytest.raises(ValueError, match="another model.*d_model"):
        mc.train(mc.ModelConfig(d_model=16, n_heads=2, d_head=4), resume=ck, **RUN)
    with pytest.raises(ValueError, match="reshapes the cosine schedule"):
        mc.train(TINY, resume=ck, **(RUN | dict(steps=30)))
    mc.save(tmp_path / "bare.npz", mc.init_params(TINY, 0), TINY)
    with pytest.raises(ValueError, match="no training state"):
        mc.train(TINY, resume=tmp_path / "bare.npz", **RUN)


def test_killed_process_resumes_exactly(tmp_path):
    """SIGKILL a real training process after some checkpoints; resume from what it left."""
    ck = tmp_path / "k.npz"
    kw = dict(batch_size=4, max_len=4, eval_every=0, checkpoint_every=2)
    cmd = [sys.executable, "-m", "minicount", "train", "--steps", "100000", "--out", str(ck)]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not ck.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    k = mc.load_checkpoint(ck)["info"]["step"]
    assert k >= 2 and k % 2 == 0
    config = mc.ModelConfig(n_ctx=9)  # the CLI's n_ctx for --max-len 4 (unused without pos_emb)
    resumed, _ = mc.train(config, steps=k + 3, resume=ck, **kw)
    whole, _ = mc.train(config, steps=k + 3, **kw)
    assert_same_params(resumed, whole)


# ---------------------------------------------------------------- NaN and inf


def poison_gradient(monkeypatch, name, at_step, member=None):
    """Make the gradient of one parameter NaN at one step (1-based) of the training loop."""
    real, calls = train_module.loss_and_grads_sliced, []

    def patched(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == at_step:
            grads[name][() if member is None else member] = np.nan
        return loss, grads

    monkeypatch.setattr(train_module, "loss_and_grads_sliced", patched)


def test_nan_gradient_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "n.npz"
    kw = dict(RUN, eval_every=0, checkpoint_every=5)
    poison_gradient(monkeypatch, "blocks.0.attn.W_K", at_step=7)
    with pytest.raises(NonFiniteError) as e:
        mc.train(TINY, checkpoint=ck, **kw)
    message = str(e.value)
    assert "step 7" in message and "gradient of blocks.0.attn.W_K is nan" in message
    assert f"{ck} (step 5)" in message
    assert e.value.step == 7 and e.value.names == ["blocks.0.attn.W_K"]
    saved = mc.load_checkpoint(ck)
    assert saved["info"]["step"] == 5
    assert all(np.isfinite(v).all() for v in saved["params"].values())
    monkeypatch.undo()  # the fault is gone: the run picks up from step 5 as if nothing happened
    resumed, _ = mc.train(TINY, resume=ck, **kw)
    assert_same_params(resumed, mc.train(TINY, **kw)[0])


def test_nan_in_one_ensemble_member_is_named(monkeypatch):
    poison_gradient(monkeypatch, "unembed.W_U", at_step=3, member=1)
    with pytest.raises(NonFiniteError, match=r"step 3: .*unembed.W_U is nan in model\(s\) \[1\]"):
        mc.train(TINY, seed=[0, 1, 2], **RUN)


# a tiny run that saves a checkpoint after every step
EVERY_STEP_SAVED = dict(batch_size=4, max_len=4, n_eval=8, checkpoint_every=1)


def test_overflowing_lr_stops_with_the_step_and_parameter(tmp_path):
    ck = tmp_path / "o.npz"
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError) as e:
        mc.train(TINY, steps=5, lr=1e30, checkpoint=ck, **EVERY_STEP_SAVED)
    assert e.value.step == 2 and "overflowed" in str(e.value) and e.value.names[0] in str(e.value)
    assert mc.load_checkpoint(ck)["info"]["step"] == 1  # step 1's parameters were still finite


def test_non_finite_parameters_are_never_saved(tmp_path):
    """lr 1e38 makes the first update itself overflow: the checkpoint must not be written."""
    ck = tmp_path / "inf.npz"
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match="step 1: parameter "):
        mc.train(TINY, steps=3, lr=1e38, checkpoint=ck, **EVERY_STEP_SAVED)
    assert not ck.exists()


def test_the_guard_covers_the_adamw_moments(tmp_path, monkeypatch):
    """A finite gradient of 1e30 squares to inf in float32's second moment; the parameters
    stay finite, but such a state must not be saved."""
    real, calls = train_module.loss_and_grads_sliced, []

    def huge(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            grads["unembed.W_U"][...] = 1e30
        return loss, grads

    monkeypatch.setattr(train_module, "loss_and_grads_sliced", huge)
    ck = tmp_path / "m.npz"
    with np.errstate(all="ignore"), pytest.raises(mc.NonFiniteError) as e:
        mc.train(TINY, checkpoint=ck, checkpoint_every=1, **(SHORT_RUN | dict(eval_every=0)))
    assert "AdamW moment v.unembed.W_U is inf" in str(e.value) and e.value.step == 3
    saved = mc.load_checkpoint(ck)
    assert saved["info"]["step"] == 2
    assert all(np.isfinite(v).all() for v in saved["opt_state"].values() if hasattr(v, "shape"))


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_bits_across_processes(tmp_path):
    ck = tmp_path / "p.npz"
    argv = [
        "--steps",
        "12",
        "--batch-size",
        "8",
        "--max-len",
        "6",
        "--eval-every",
        "4",
        "--seeds",
        "4",
        "--grad-clip",
        "0.5",
    ]
    r = subprocess.run(
        [sys.executable, "-m", "minicount", "train", *argv, "--out", str(ck)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    here, history = mc.train(
        mc.ModelConfig(), steps=12, batch_size=8, max_len=6, eval_every=4, seed=4, grad_clip=0.5
    )
    saved = mc.load_checkpoint(ck)
    assert_same_params(saved["params"], here)
    same_history(saved["info"]["history"], history)
    assert saved["info"]["seeds"] == [4]
    assert saved["info"]["versions"]["numpy"] == np.__version__
    assert json.loads(r.stdout.splitlines()[-1])["seeds"] == [4]


def test_train_config_holds_a_data_config_and_writes_it_flat():
    """TrainConfig keeps its keywords max_len, bos, probs, n_eval (they make its DataConfig),
    writes them flat as older checkpoints hold them, and reads those back."""
    from dataclasses import replace

    from minicount.data import DataConfig
    from minicount.train import TrainConfig

    tc = TrainConfig(max_len=5, bos=False, probs=[0.25, 0.5, 0.25], n_eval=7)
    assert tc.data == DataConfig(max_len=5, bos=False, probs=(0.25, 0.5, 0.25), n_eval=7)
    d = tc.to_dict()
    assert "data" not in d and (d["max_len"], d["bos"], d["probs"], d["n_eval"]) == (
        5, False, [0.25, 0.5, 0.25], 7)  # fmt: skip
    assert TrainConfig.from_dict(d) == tc and replace(tc, max_len=9).data.max_len == 9
    other = TrainConfig(data=DataConfig(eval_seed=7))
    assert TrainConfig.from_dict(other.to_dict()) == other
    with pytest.raises(AttributeError):
        tc.max_len = 3
