"""Hostile and damaged input (issue 10): bounded checkpoint loading, validated metadata,
non-finite numbers, signals and leftovers, size limits, one-line errors, output paths."""

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicount as mc
from minicount import data, limits
from minicount.cli import _json_text, main
from minicount.safeio import exclusive_lock

train_module = sys.modules["minicount.train"]
ROOT = Path(__file__).resolve().parents[1]
TINY = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
RUN = dict(steps=4, batch_size=4, max_len=4, n_eval=16, eval_every=2)


def npy_bytes(a) -> bytes:
    f = io.BytesIO()
    np.save(f, np.asarray(a), allow_pickle=False)
    return f.getvalue()


def write_zip(path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    """A zip of {name: bytes}, as np.savez lays one out."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return Path(path)


def run_cli(argv):
    """(exit code, stdout, stderr) of main(argv), in process."""
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(x) for x in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run_dir():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.npz"
        mc.train(TINY, checkpoint=path, **RUN)
        yield Path(folder)


@pytest.fixture(scope="module")
def members(run_dir):
    with zipfile.ZipFile(run_dir / "good.npz") as z:
        return {n: z.read(n) for n in z.namelist()}


# ---------------------------------------------------------------- 1. bounded loading

HOSTILE = r"""
import io, json, sys, time, zipfile
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
print("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
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
            damaged[data.draw(st.text(min_size=1, max_size=12)) + ".npy"] = damaged.pop(name, b"")
        elif what == "add":
            damaged[data.draw(st.sampled_from(["param:x.npy", "opt:m.y.npy", "junk"]))] = b"x"
        elif what == "truncate" and name in damaged:
            payload = damaged[name]
            damaged[name] = payload[: data.draw(st.integers(0, max(0, len(payload) - 1)))]
        elif what == "swap":
            other = data.draw(st.sampled_from(names))
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


# ---------------------------------------------------------------- 2. damaged metadata

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
                mc.train(TINY, resume=path, **(RUN | dict(steps=5)))
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


# ---------------------------------------------------------------- 3. non-finite numbers


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
        mc.train(TINY, checkpoint=ck, checkpoint_every=1, **(RUN | dict(eval_every=0)))
    assert "AdamW moment v.unembed.W_U is inf" in str(e.value) and e.value.step == 3
    saved = mc.load_checkpoint(ck)
    assert saved["info"]["step"] == 2
    assert all(np.isfinite(v).all() for v in saved["opt_state"].values() if hasattr(v, "shape"))


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


def test_every_json_output_is_valid_json(run_dir, tmp_path):
    strict = dict(parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    code, out, _ = run_cli(["eval", run_dir / "good.npz", "--n-eval", "4"])
    assert code == 0 and json.loads(out, **strict)["held_out"]["l_acc"] >= 0
    code, out, _ = run_cli(["train", "--steps", "1", "--batch-size", "2", "--max-len", "2",
                            "--n-eval", "1", "--out", tmp_path / "t.npz"])  # fmt: skip
    assert code == 0 and "roc_auc" in json.loads(out.splitlines()[-1], **strict)
    assert (
        _json_text({"auc": float("nan"), "x": [1.0, float("inf")]})
        == '{"auc": null, "x": [1.0, null]}'
    )


# ---------------------------------------------------------------- 5. signals and leftovers


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_act_as_ctrl_c(tmp_path, signum):
    ck = tmp_path / "s.npz"
    options = "--steps 100000 --batch-size 4 --max-len 4 --eval-every 0 --checkpoint-every 2"
    cmd = [sys.executable, "-m", "minicount", "train", *options.split(), "--out", str(ck)]
    proc = subprocess.Popen(
        cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not ck.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"minicount train: interrupted; continue with: python -m minicount train --resume {ck}"
    )
    assert mc.load_checkpoint(ck)["info"]["step"] >= 2


def test_stale_temporaries_are_removed_and_the_hint_is_only_for_this_run(tmp_path, monkeypatch):
    ck = tmp_path / "m.npz"
    mc.train(TINY, checkpoint=ck, **RUN)  # an older run in the same path
    stale = tmp_path / "m.npz.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "loss_and_grads_sliced", interrupt)
    code, _, err = run_cli(["train", "--steps", "5", "--max-len", "4", "--out", ck])
    assert code == 130 and err.strip().splitlines()[-1] == "minicount train: interrupted"
    assert not stale.exists()
    assert mc.load_checkpoint(ck)["info"]["step"] == RUN["steps"]  # the older run, untouched


# ---------------------------------------------------------------- 6. unbounded requests


def test_huge_requests_are_refused_before_allocating(tmp_path, monkeypatch):
    start = time.perf_counter()
    code, _, err = run_cli(["train", "--seeds", "0-100000000", "--out", tmp_path / "x"])
    assert code == 2 and f"limit of {limits.MAX_ENSEMBLE}" in err
    code, _, err = run_cli(["train", "--batch-size", str(10**9), "--out", tmp_path / "x"])
    assert code == 2
    one_error_line(err, "memory", "over the limit")
    with pytest.raises(ValueError, match="over the limit"):
        mc.train(TINY, seed=list(range(limits.MAX_ENSEMBLE + 1)))
    with pytest.raises(ValueError, match="over the limit"):
        mc.ModelConfig(d_model=2**20, n_heads=64, d_head=64)
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", str(2**20))  # 1 MiB: even the default run
    with pytest.raises(ValueError, match="over the limit of 0.000977 GiB"):
        mc.train(TINY, steps=1)
    code, _, err = run_cli(["eval", tmp_path / "missing.npz"])
    assert code == 2
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.iterdir())


def test_the_memory_estimate_bounds_a_real_run():
    """The estimate is from above: a run's measured peak (tracemalloc) stays below it."""
    import tracemalloc

    config, kw = mc.ModelConfig(), dict(steps=2, batch_size=64, max_len=16, n_eval=256)
    estimate = limits.training_bytes(config, 3, 64, 17, 256)
    tracemalloc.start()
    mc.train(config, seed=[0, 1, 2], **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < estimate < 50 * peak


# ---------------------------------------------------------------- 7. one line, in our words


def test_errors_speak_the_projects_words(tmp_path):
    params = mc.init_params(TINY, 0)
    tokens, targets, mask = data.sample_batch(4, 5, np.random.default_rng(0))
    cases = [
        (lambda: mc.evaluate(params, tokens, targets, mask[:, :2], TINY), "mask must be"),
        (
            lambda: mc.forward(params, tokens, TINY, hooks={"blocks.0.attn.hook_pattern": print}),
            "must return an array of its input's shape",
        ),
        (
            lambda: mc.forward(
                params, tokens, TINY, hooks={"blocks.0.attn.hook_z": lambda z: z[..., :1]}
            ),
            "hook 'blocks.0.attn.hook_z'",
        ),
        (lambda: mc.ModelConfig(d_vocab=7), "d_vocab must be 6"),
        (lambda: mc.init_ensemble(TINY, []), "at least one seed"),
    ]
    for call, words in cases:
        with pytest.raises(ValueError, match=words):
            call()
    for argv, words in [
        (["train", "--seeds", "5-3"], "lo <= hi"),
        (["train", "--out", ""], "empty"),
        (["analyze", "x.npz", "--out", ""], "empty"),
    ]:
        code, _, err = run_cli(argv)
        assert code == 2 and words in err.strip().splitlines()[-1], err


def test_no_warnings_from_worker_threads_before_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOUNT_THREADS", "2")  # slices run on the pool's threads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(["train", "--steps", "3", "--batch-size", "64", "--lr", "1e30",
                                "--out", tmp_path / "w.npz"])  # fmt: skip
    assert code == 2 and "non-finite training" in err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


# ---------------------------------------------------------------- 8. paths and writers


def test_outputs_that_cannot_hold_a_file_are_refused(tmp_path, run_dir):
    (tmp_path / "folder").mkdir()
    existed = Path("/dev/null.npz").exists()
    for out in ("/dev/null", "/dev/full", tmp_path / "folder"):
        code, _, err = run_cli(["train", "--steps", "1", "--out", out])
        assert code == 2
        one_error_line(err, str(out))
        code, _, err = run_cli(["analyze", run_dir / "good.npz", "--n-eval", "4", "--out", out])
        assert code == 2
        one_error_line(err, str(out))
    assert existed or not Path("/dev/null.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_second_writer_gets_a_clear_error(tmp_path):
    out = tmp_path / "busy.npz"
    with exclusive_lock(out):  # another run is writing busy.npz
        code, _, err = run_cli(["train", "--steps", "1", "--out", out])
        assert code == 2
        one_error_line(err, "another minicount process is writing", str(out))
        code, _, err = run_cli(["analyze", "x.npz", "--out", tmp_path / "busy.npz"])
        assert code == 2 and "another minicount process" in err
    assert not out.exists()


def test_resume_and_analyze_write_through_symlinks(tmp_path, run_dir):
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_bytes((run_dir / "good.npz").read_bytes())
    link.symlink_to(real)
    code, _, err = run_cli(["train", "--resume", link, "--steps", "6"])
    assert code == 0, err
    assert link.is_symlink() and mc.load_checkpoint(real)["info"]["step"] == 6
    report, report_link = tmp_path / "a.json", tmp_path / "a-link.json"
    report_link.symlink_to(report)
    code, _, err = run_cli(["analyze", real, "--n-eval", "8", "--out", report_link])
    assert code == 0, err
    assert report_link.is_symlink() and json.loads(report.read_text())["n_eval"] == 8
