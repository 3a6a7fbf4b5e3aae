"""Robust by default: junk in gives a clean error (or a correct result), a killed run resumes
to exactly the parameters of an uninterrupted one, damaged checkpoints are refused, and a
NaN stops training with a message that names the step and the parameter."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicount as mc
from minicount import NonFiniteError, data
from minicount.cli import main
from minicount.data import BOS, EOS, V

train_module = sys.modules["minicount.train"]  # (minicount.train is also the train function)

ROOT = Path(__file__).resolve().parents[1]
TINY = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
# every option that changes the trajectory is off its default, so resume must restore them all
RUN = dict(
    steps=24,
    batch_size=8,
    max_len=6,
    eval_every=8,
    n_eval=32,
    lr=1e-2,
    warmup=3,
    schedule="cosine",
    weight_decay=0.01,
    grad_clip=0.5,
)


class Stop(Exception):
    """Stands in for a run killed after a checkpoint."""


def same_history(a, b):
    """Histories equal in everything but wall-clock times."""
    assert a["step"] == b["step"] and a["loss"] == b["loss"]
    strip = [[{k: v for k, v in e.items() if k != "time"} for e in h["eval"]] for h in (a, b)]
    assert strip[0] == strip[1]


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@contextlib.contextmanager
def inside(folder):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


# ---------------------------------------------------------------- the string encoder


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


# ---------------------------------------------------------------- batches and arrays

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


token_arrays = st.builds(
    lambda a, dtype: a.astype(dtype),  # uint8 wraps -1 to 255: out of range all the same
    hnp.arrays(
        np.int64,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements=st.integers(-2, 8),
    ),
    st.sampled_from(["int32", "int64", "uint8", "float64", "bool"]),
)


@settings(max_examples=40)
@given(tokens=token_arrays)
def test_forward_junk_tokens_give_logits_or_a_value_error(tokens):
    params = mc.init_params(TINY, 0)
    valid = (
        tokens.ndim >= 2
        and tokens.size > 0
        and tokens.dtype.kind in "iu"
        and tokens.min() >= 0
        and tokens.max() < V
    )
    if not valid:
        with pytest.raises(ValueError):
            mc.forward(params, tokens, TINY)
        return
    logits = mc.forward(params, tokens, TINY)
    assert logits.shape == tokens.shape + (V,) and np.isfinite(logits).all()
    # the same ids as int64 give the same logits: the dtype of valid ids does not matter
    np.testing.assert_array_equal(logits, mc.forward(params, tokens.astype(np.int64), TINY))


@pytest.mark.parametrize(
    "which,breakage",
    [
        ("targets", lambda t: t[..., :3]),
        ("targets", lambda t: t[:2]),
        ("targets", lambda t: t.astype(np.int64)),
        ("targets", lambda t: np.where(t > 0, np.nan, t)),
        ("targets", lambda t: t * 2 - 0.5),
        ("targets", lambda t: t[None].repeat(3, 0)),
        ("targets", lambda t: t.tolist()),
        ("mask", lambda m: m.astype(np.float32)),
        ("mask", lambda m: m[:, :2]),
        ("mask", lambda m: np.zeros_like(m)),
        ("mask", lambda m: m[None].repeat(2, 0)),
        ("mask", lambda m: m.tolist()),
    ],
)
def test_loss_with_bad_targets_or_mask_is_a_value_error(which, breakage):
    params = mc.init_params(TINY, 0)
    tokens, targets, mask = data.sample_batch(4, 5, np.random.default_rng(0))
    args = {"targets": targets, "mask": mask}
    args[which] = breakage(args[which])
    with pytest.raises(ValueError, match=which):
        mc.loss_and_grads(params, tokens, args["targets"], args["mask"], TINY)


@pytest.mark.parametrize(
    "breakage,match",
    [
        (lambda p: p.pop("unembed.b_U"), "missing"),
        (lambda p: p.update(extra=np.zeros(3)), "unexpected"),
        (lambda p: p.update({"embed.W_E": np.zeros((6, 9), np.float32)}), "embed.W_E"),
        (lambda p: p.update({"embed.W_E": np.zeros((6, 8), np.int64)}), "floating"),
        (
            lambda p: p.update({"embed.W_E": np.zeros((2, 6, 8), np.float32)}),
            "disagree on the model",
        ),
        (lambda p: p.update({"embed.W_E": [[0.0] * 8] * 6}), "array"),
    ],
)
def test_params_that_do_not_fit_the_config_are_named(breakage, match):
    params = mc.init_params(TINY, 0)
    breakage(params)
    tokens = data.encode("0121")[None]
    with pytest.raises(ValueError, match=match):
        mc.forward(params, tokens, TINY)


def test_token_and_context_limits_are_named():
    params = mc.init_params(TINY, 0)
    with pytest.raises(ValueError, match=r"0\.\.5, got 0\.\.6"):
        mc.forward(params, np.array([[3, 0, 6]]), TINY)
    with pytest.raises(ValueError, match="n_ctx=4"):
        config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4, pos_emb=True, n_ctx=4)
        mc.forward(mc.init_params(config, 0), data.encode("0121")[None], config)
    with pytest.raises(ValueError, match="unknown hook names.*hook_patern"):
        mc.forward(
            params, data.encode("01")[None], TINY, hooks={"blocks.0.attn.hook_patern": lambda a: a}
        )
    ens = mc.init_ensemble(TINY, [0, 1])
    with pytest.raises(ValueError, match="ensemble of 2"):
        mc.forward(ens, np.zeros((3, 2, 4), np.int64), TINY)


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


# ---------------------------------------------------------------- the command line

OPTIONS = [
    "--steps",
    "--batch-size",
    "--lr",
    "--weight-decay",
    "--warmup",
    "--schedule",
    "--grad-clip",
    "--seeds",
    "--eval-every",
    "--dtype",
    "--device",
    "--max-len",
    "--probs",
    "--d-model",
    "--n-heads",
    "--d-head",
    "--n-layers",
    "--n-ctx",
    "--d-mlp",
    "--checkpoint-every",
    "--resume",
    "--no-bos",
    "--pos-emb",
    "--layernorm",
    "--mlp",
    "--bogus",
    "-x",
]


def small(text: str) -> bool:
    """Keep junk from asking for a big (slow but valid) run: every whole number in it (as int()
    reads it, seeds ranges and lists included) is at most 3."""
    for piece in [text, *re.split("[-,]", text)]:
        try:
            if abs(int(piece)) > 3:
                return False
        except ValueError:
            pass
    return True


values = st.one_of(
    st.integers(-3, 3).map(str),
    st.floats(-1e3, 1e3).map(repr),
    st.sampled_from(
        [
            "",
            "-",
            "0-2",
            "1,3",
            "3-1",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "cpu",
            "gpu",
            "auto",
            "tpu",
            "float64",
            "float16",
            "cosine",
            "0.5",
            "0x10",
            "1_0",
        ]
    ),
    st.text(max_size=5),
).filter(small)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), values), max_size=4))
def test_cli_train_junk_exits_2_or_trains(pairs):
    argv = ["train", "--steps", "2", "--batch-size", "4", "--max-len", "4", "--eval-every", "0"]
    for option, value in pairs:
        argv += (
            [option]
            if option in ("--no-bos", "--pos-emb", "--layernorm", "--mlp")
            else [option, value]
        )
    with tempfile.TemporaryDirectory() as folder, inside(folder):
        check_cli_outcome(argv + ["--out", "m.npz"], Path(folder) / "m.npz")


@given(
    st.lists(st.text(max_size=6).filter(lambda a: not (a and "train".startswith(a))), max_size=4)
)
def test_cli_eval_and_top_level_junk_exit_2(argv):
    """(no 'train' in the junk: a bare 'train' is a valid 1000-step run)"""
    with tempfile.TemporaryDirectory() as folder, inside(folder):
        check_cli_outcome(argv, None)
        check_cli_outcome(["eval"] + argv, None)


def check_cli_outcome(argv, checkpoint):
    """main(argv) exits 2 (argparse) or returns 2 with one error line, or succeeds for real."""
    out, err = _run_main(argv)
    code, stdout, stderr = out
    assert err is None, f"{argv!r} raised {err!r}"
    if code == 0:
        if checkpoint is not None and "-h" not in argv and "--help" not in argv:
            result = json.loads(stdout.strip().splitlines()[-1])
            assert "versions" in result and "seeds" in result
            assert mc.load_checkpoint(checkpoint)["info"]["step"] == result["step"] <= 3
        return
    assert code == 2, (argv, code, stderr)
    assert "error: " in stderr or stdout.startswith("usage"), (argv, stderr)
    assert "Traceback" not in stderr


def _run_main(argv):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr), np.errstate(all="ignore"):
            code = main(argv)
    except SystemExit as e:
        code = e.code
    except Exception as e:  # anything else is a bug
        return (None, stdout.getvalue(), stderr.getvalue()), e
    return (code, stdout.getvalue(), stderr.getvalue()), None


def test_cli_resume_refuses_changed_settings_and_continues(tmp_path, capsys):
    ck = str(tmp_path / "r.npz")
    base = ["train", "--batch-size", "4", "--max-len", "4", "--eval-every", "0", "--lr", "0.01"]
    assert main(base + ["--steps", "6", "--out", ck]) == 0
    assert main(["train", "--steps", "9", "--resume", ck, "--lr", "0.1"]) == 2
    assert "lr=0.01 vs 0.1" in capsys.readouterr().err
    assert main(base + ["--steps", "9", "--resume", ck]) == 0  # same options again: fine
    assert mc.load_checkpoint(ck)["info"]["step"] == 9
    whole, _ = mc.train(
        mc.ModelConfig(), steps=9, batch_size=4, max_len=4, eval_every=0, lr=0.01, n_eval=2048
    )
    assert_same_params(mc.load(ck)[0], whole)


# ---------------------------------------------------------------- kill and resume


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


def test_ctrl_c_exits_130_with_the_resume_command(tmp_path):
    ck = tmp_path / "c"  # without .npz: saved as c.npz, and the hint must name that file
    cmd = [
        sys.executable,
        "-m",
        "minicount",
        "train",
        "--steps",
        "100000",
        "--batch-size",
        "4",
        "--max-len",
        "4",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "2",
        "--out",
        str(ck),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not ck.with_suffix(".npz").exists()
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == (
        f"minicount train: interrupted; continue with: python -m minicount train --resume {ck}.npz"
    )
    assert mc.load_checkpoint(ck)["info"]["step"] >= 2  # the suffix may be left out


# ---------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def checkpoint_bytes():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.npz"
        mc.train(TINY, checkpoint=path, **(RUN | dict(steps=3)))
        return path.read_bytes()


@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_checkpoints_are_refused(checkpoint_bytes, cut):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.npz"
        path.write_bytes(checkpoint_bytes[: int(cut * len(checkpoint_bytes))])
        with pytest.raises(ValueError, match="checkpoint"):
            mc.load_checkpoint(path)


@given(where=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_corrupted_checkpoints_are_refused_or_load_unchanged(checkpoint_bytes, where, flip):
    """A flipped byte is caught (zip CRCs, headers, JSON) unless it lies in a field nothing
    reads, such as a timestamp; then the content must come back unchanged."""
    damaged = bytearray(checkpoint_bytes)
    damaged[int(where * len(damaged))] ^= flip
    with tempfile.TemporaryDirectory() as folder:
        good, bad = Path(folder) / "good.npz", Path(folder) / "bad.npz"
        good.write_bytes(checkpoint_bytes)
        bad.write_bytes(bytes(damaged))
        try:
            loaded = mc.load_checkpoint(bad)
        except ValueError:
            return
        expected = mc.load_checkpoint(good)
    assert loaded["config"] == expected["config"] and loaded["info"] == expected["info"]
    assert_same_params(loaded["params"], expected["params"])
    assert_same_params(loaded["opt_state"], expected["opt_state"])


def test_pickles_and_plain_npy_files_are_refused(tmp_path):
    import pickle

    (tmp_path / "p.npz").write_bytes(pickle.dumps({"params": 1}))
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.savez(tmp_path / "obj.npz", **{"meta:format": np.array([{"x": 1}], dtype=object)})
    for name in ("p.npz", "a.npy", "obj.npz"):
        with pytest.raises(ValueError, match="checkpoint"):
            mc.load_checkpoint(tmp_path / name)


def test_an_unwritable_checkpoint_path_fails_before_training(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    start = time.perf_counter()
    with pytest.raises(OSError, match="directory"):
        mc.train(mc.ModelConfig(), steps=10**6, checkpoint=tmp_path / "dir.npz")
    assert time.perf_counter() - start < 5


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


def test_overflowing_lr_stops_with_the_step_and_parameter(tmp_path):
    ck = tmp_path / "o.npz"
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError) as e:
        mc.train(
            TINY,
            steps=5,
            batch_size=4,
            max_len=4,
            n_eval=8,
            lr=1e30,
            checkpoint=ck,
            checkpoint_every=1,
        )
    assert e.value.step == 2 and "overflowed" in str(e.value) and e.value.names[0] in str(e.value)
    assert mc.load_checkpoint(ck)["info"]["step"] == 1  # step 1's parameters were still finite


def test_non_finite_parameters_are_never_saved(tmp_path):
    """lr 1e38 makes the first update itself overflow: the checkpoint must not be written."""
    ck = tmp_path / "inf.npz"
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match="step 1: parameter "):
        mc.train(
            TINY,
            steps=3,
            batch_size=4,
            max_len=4,
            n_eval=8,
            lr=1e38,
            checkpoint=ck,
            checkpoint_every=1,
        )
    assert not ck.exists()


def test_cli_nan_exits_2_with_one_line(tmp_path, capsys):
    code = main(
        [
            "train",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--max-len",
            "4",
            "--lr",
            "1e30",
            "--out",
            str(tmp_path / "x.npz"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("minicount train: error: non-finite training at step")
    assert not any("Warning" in line for line in err)


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
