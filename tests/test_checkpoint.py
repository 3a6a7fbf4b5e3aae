"""Checkpoints (minicount/checkpoint.py): save and load round trips, and every kind of damaged
or hostile file refused with a ValueError (or loaded unchanged when nothing that matters
changed), quickly and in bounded memory."""

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minicount as mc

from .helpers import (
    ROOT,
    RUN,
    SHORT_RUN,
    TINY,
    assert_same_params,
    npy_bytes,
    one_error_line,
    run_cli,
    write_zip,
)


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


# ---------------------------------------------------------------- bounded loading


HOSTILE = r"""
import io, json, pathlib, sys, time, zipfile
import numpy as np
import minicount as mc

def npy(a):
    f = io.BytesIO(); np.save(f, np.asarray(a)); return f.getvalue()

folder = sys.argv[1]
if sys.argv[2] == "make":
    fmt = npy(np.array("minicount-checkpoint-v1"))
    big = dict(d_model=10**6, n_heads=10**4, d_head=10**4, n_layers=256)
    cases = {
        "config": {"meta:config.npy": npy(np.array(json.dumps(big)))},
        "layers": {"meta:config.npy": npy(np.array(json.dumps({"n_layers": 10**8})))},
        "shape": {
            "meta:config.npy": npy(np.array(json.dumps({}))),
            **{f"param:{k}.npy": npy(v) for k, v in mc.init_params(mc.ModelConfig()).items()},
            # a header that claims 10**12 floats, with 8 bytes of data
            "param:embed.W_E.npy": npy(np.zeros(1))[:-8].replace(b"(1,)", b"(1000000000000,)")
            + bytes(8),
        },
    }
    for name, extra in cases.items():
        with zipfile.ZipFile(f"{folder}/{name}.npz", "w") as z:
            z.writestr("meta:format.npy", fmt)
            for k, v in extra.items():
                z.writestr(k, v)
    # an unknown member that inflates to 300 MB: never opened
    with zipfile.ZipFile(f"{folder}/bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta:format.npy", fmt, compress_type=zipfile.ZIP_STORED)
        with z.open("junk.npy", "w", force_zip64=True) as f:
            chunk = bytes(2**24)
            for _ in range(18):
                f.write(chunk)
    sys.exit(0)
# a fresh process loads them: its own peak memory is the loader's (with Python and NumPy)
for name in ("config", "layers", "shape", "bomb"):
    start = time.perf_counter()
    try:
        mc.load_checkpoint(f"{folder}/{name}.npz")
        print(name, "LOADED")
    except ValueError as e:
        print(name, round(time.perf_counter() - start, 3), str(e)[-160:])
import resource
# VmHWM: this process's own peak (KiB). ru_maxrss would also keep the peak of the pytest
# process it was forked from, which exec does not reset on Linux
status = pathlib.Path("/proc/self/status")
lines = status.read_text().splitlines() if status.exists() else []
hwm = [line.split()[1] for line in lines if line.startswith("VmHWM:")]
print("peak", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_hostile_checkpoints_are_refused_fast_in_bounded_memory(tmp_path):
    """A config asking for an enormous model, a header claiming 10**12 floats, an unknown
    member that inflates to 300 MB: each refused in well under a second, and the whole
    process (Python and NumPy included) stays under 200 MB."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", HOSTILE, str(tmp_path), "make"], env=env, check=True,
                   timeout=120)  # fmt: skip
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", HOSTILE, str(tmp_path), "load"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    # measured in the child itself (RUSAGE_CHILDREN would count every earlier subprocess)
    peak_mb = int(lines.pop("peak")) / 1024
    assert set(lines) == {"config", "layers", "shape", "bomb"}, r.stdout
    for name, line in lines.items():
        assert "LOADED" not in line, name
        assert float(line.split()[0]) < 1.0, (name, line)
    assert "over the limit" in lines["config"] and "n_layers" in lines["layers"]
    assert "embed.W_E" in lines["shape"] and "junk" in lines["bomb"]
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    assert time.perf_counter() - start < 60


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_member_sets_and_truncations_are_refused(members, data):
    """Drop, rename, duplicate, add or truncate members: refused with a ValueError, or (when
    nothing that matters changed) loaded unchanged."""
    names = sorted(members)
    damaged = dict(members)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["drop", "rename", "add", "truncate", "swap"]))
        name = data.draw(st.sampled_from(names))
        if what == "drop":
            damaged.pop(name, None)
        elif what == "rename":
            # (zipfile cuts a name at NUL, and an empty name cannot be written at all)
            new = data.draw(st.text(min_size=1, max_size=12).filter(lambda t: "\x00" not in t))
            damaged[new + ".npy"] = damaged.pop(name, b"")
        elif what == "add":
            damaged[data.draw(st.sampled_from(["param:x.npy", "opt:m.y.npy", "junk"]))] = b"x"
        elif what == "truncate" and name in damaged:
            payload = damaged[name]
            damaged[name] = payload[: data.draw(st.integers(0, max(0, len(payload) - 1)))]
        elif what == "swap":
            other = data.draw(st.sampled_from(names))
            # two arrays of one shape (W_Q and W_K, a parameter and its AdamW moment) swap
            # undetectably: no checksum tells them apart, so only swaps that can be seen
            assume(name == other or len(members[name]) != len(members[other]))
            damaged[name], damaged[other] = members[other], members[name]
    with tempfile.TemporaryDirectory() as folder:
        path = write_zip(Path(folder) / "d.npz", damaged)
        try:
            loaded = mc.load_checkpoint(path)
        except ValueError:
            return
        good = mc.load_checkpoint(write_zip(Path(folder) / "g.npz", members))
    assert loaded["info"] == (good["info"] if "meta:info.npy" in damaged else {})
    assert loaded["config"] == good["config"]
    for k, v in good["params"].items():
        np.testing.assert_array_equal(loaded["params"][k], v)


def test_compressed_members_are_refused(tmp_path, members):
    with pytest.raises(ValueError, match="compressed"):
        mc.load_checkpoint(write_zip(tmp_path / "c.npz", members, zipfile.ZIP_DEFLATED))


# ---------------------------------------------------------------- damaged metadata


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


INFO_PATHS = [
    ("train",),
    ("train", "max_len"),
    ("train", "seeds"),
    ("train", "probs"),
    ("step",),
    ("seeds",),
    ("history",),
    ("history", "loss"),
    ("history", "eval"),
    ("history", "eval", 0),
    ("history", "eval", 0, "time"),
    ("history", "eval", 0, "l_acc"),
    ("rng_states",),
    ("rng_states", 0),
    ("versions",),
]


def with_info(members, info) -> dict:
    return {**members, "meta:info.npy": npy_bytes(np.array(json.dumps(info)))}


def replace_at(obj, path, value):
    """A copy of obj with obj[path] = value (or the key dropped when value is DROP)."""
    import copy

    obj = copy.deepcopy(obj)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if value is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


DROP = object()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(INFO_PATHS), value=st.one_of(st.just(DROP), json_values))
def test_damaged_info_is_a_value_error_from_load_resume_and_eval(run_dir, members, where, value):
    good = mc.load_checkpoint(run_dir / "good.npz")["info"]
    info = replace_at(good, where, value)
    with tempfile.TemporaryDirectory() as folder:
        path = write_zip(Path(folder) / "m.npz", with_info(members, info))
        try:
            mc.load_checkpoint(path)
        except ValueError:
            pass
        try:
            with np.errstate(all="ignore"):
                mc.train(TINY, resume=path, **(SHORT_RUN | dict(steps=5)))
        except ValueError:
            pass
        code, out, err = run_cli(["eval", path, "--n-eval", "8"])
        assert code in (0, 2) and "Traceback" not in err
        if code == 0:
            json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        code, _, err = run_cli(["train", "--resume", path, "--steps", "5", "--out", path])
        assert code in (0, 2) and "Traceback" not in err, err


@pytest.mark.parametrize(
    "part,text",
    [
        ("meta:info", "[" * 100_000 + "]" * 100_000),
        ("meta:info", '{"a": ' + "[" * 200 + "]" * 200 + "}"),
        ("meta:config", "[" * 10_000),
        ("meta:config", '{"d_model": "32"}'),
        ("meta:config", '{"d_model": 1' + "0" * 5000 + "}"),
        ("meta:info", '{"history": {"step": [], "loss": [], "eval": [{"step": 1}]}}'),
    ],
    ids=["deep-info", "nested-info", "deep-config", "str-d_model", "long-int", "eval-entry"],
)
def test_deep_or_mistyped_json_is_one_line_from_every_command(tmp_path, members, part, text):
    path = write_zip(tmp_path / "m.npz", {**members, part + ".npy": npy_bytes(np.array(text))})
    with pytest.raises(ValueError, match="damaged"):
        mc.load_checkpoint(path)
    for argv in (["eval", path], ["analyze", path], ["train", "--resume", path]):
        code, _, err = run_cli(argv)
        assert code == 2
        one_error_line(err, "damaged")


def test_non_finite_parameters_are_refused_by_load_eval_and_analyze(tmp_path, members):
    params = mc.init_params(TINY, 0)
    params["blocks.0.attn.W_Q"][0, 0, 0] = np.nan
    params["unembed.b_U"][1] = np.inf
    broken = {"param:" + k + ".npy": npy_bytes(v) for k, v in params.items()}
    path = write_zip(tmp_path / "nan.npz", {**members, **broken})
    with pytest.raises(ValueError, match="NaN or inf"):
        mc.load_checkpoint(path)
    for command in ("eval", "analyze"):
        code, out, err = run_cli([command, path])
        assert code == 2 and out == ""
        one_error_line(err, "blocks.0.attn.W_Q", "NaN or inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        mc.save(tmp_path / "no.npz", params, TINY)
    huge = mc.init_params(TINY, 0)  # finite, but the logits overflow
    huge["embed.W_E"] *= 1e30
    huge["unembed.W_U"] *= 1e38
    mc.save(tmp_path / "huge.npz", huge, TINY)
    code, out, err = run_cli(["eval", tmp_path / "huge.npz", "--n-eval", "8"])
    assert code == 0 and json.loads(out)["held_out"]["loss"] is None  # valid JSON: null
    code, _, err = run_cli(["analyze", tmp_path / "huge.npz", "--n-eval", "8"])
    assert code == 2
    one_error_line(err, "overflow")
