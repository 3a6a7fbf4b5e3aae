"""The command line (minicount/cli.py): train, eval and analyze end to end, junk arguments
exiting 2 with one line, interrupts and signals that leave a resumable checkpoint, and
JSON output that is valid JSON."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicount as mc
from minicount import data
from minicount.cli import main
from minicount.record import json_text

from .helpers import ROOT, TINY, assert_same_params, inside, run_cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_train_then_eval(tmp_path, capsys):
    ck = tmp_path / "m.npz"
    assert (
        main(["train", "--steps", "3", "--batch-size", "8", "--eval-every", "0", "--out", str(ck)])
        == 0
    )
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["step"] == 3
    assert main(["eval", str(ck), "--n-eval", "64"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"held_out", "long"} and 0 <= result["held_out"]["l_acc"] <= 1


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--steps", "-1"],
        ["train", "--seeds", "x"],
        ["train", "--device", "tpu"],
        ["train", "--lr", "nan"],
        ["reproduce", "--heads", "0"],
        ["reproduce", "--steps", "x"],
        ["reproduce", "--preset", "huge"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_checkpoint_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("junk")
    r = subprocess.run(
        [sys.executable, "-m", "minicount", "eval", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "not a readable minicount checkpoint" in r.stderr


def test_context_too_small_is_a_clean_error(tmp_path, capsys):
    code = main(
        [
            "train",
            "--pos-emb",
            "--n-ctx",
            "10",
            "--max-len",
            "32",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "m.npz"),
        ]
    )
    assert code == 2 and "n_ctx" in capsys.readouterr().err


def test_shared_data_and_eval_size_reach_the_run(tmp_path, capsys):
    import minicount as mc

    ck = tmp_path / "ens.npz"
    code = main(
        [
            "train",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--seeds",
            "0,1",
            "--data-seed",
            "3",
            "--n-eval",
            "16",
            "--eval-every",
            "0",
            "--fused-kernel",
            "--out",
            str(ck),
        ]
    )
    assert code == 0
    train = mc.load_checkpoint(ck)["info"]["train"]
    assert train["data_seed"] == 3 and train["n_eval"] == 16 and train["seeds"] == [0, 1]
    assert train["path"] == "fused"  # --fused-kernel is a setting of the run, saved with it
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["l_acc"]) == 2


# ---------------------------------------------------------------- junk on the command line


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


def test_a_resume_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """train --resume, mc.train(resume=) and a sweep's cell each read the checkpoint they
    continue from one time (its settings, its judgement and its state come from that read)."""
    from minicount.study.run import advance
    from minicount.study.spec import Cell, SweepSpec

    ck = str(tmp_path / "r.npz")
    base = ["train", "--batch-size", "4", "--max-len", "4", "--eval-every", "0"]
    assert main(base + ["--steps", "4", "--out", ck]) == 0
    config = mc.load(ck)[1]  # (n_ctx from max_len, as the command line sets it)
    train_module = sys.modules["minicount.train"]  # (minicount.train is also the function)
    reads = []
    real = train_module.load_checkpoint
    for module in (train_module, sys.modules["minicount.study.run"]):
        monkeypatch.setattr(module, "load_checkpoint", lambda p: reads.append(p) or real(p))
    assert main(base + ["--steps", "6", "--resume", ck]) == 0
    assert len(reads) == 1
    reads.clear()
    mc.train(config, steps=8, batch_size=4, max_len=4, eval_every=0, resume=ck)
    assert len(reads) == 1
    spec = SweepSpec(cells=(Cell(steps=12, max_len=4),), names=("c",), seeds=(0,), batch_size=4)
    cell_ck = tmp_path / "cell.npz"
    advance(spec.cells[0], spec, cell_ck, 4, "cpu")  # trained from nothing: no read
    reads.clear()
    advance(spec.cells[0], spec, cell_ck, 8, "cpu")  # resumed from step 4
    assert len(reads) == 1 and mc.load_checkpoint(cell_ck)["info"]["step"] == 8


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


def test_every_json_output_is_valid_json(run_dir, tmp_path):
    strict = dict(parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    code, out, _ = run_cli(["eval", run_dir / "good.npz", "--n-eval", "4"])
    assert code == 0 and json.loads(out, **strict)["held_out"]["l_acc"] >= 0
    code, out, _ = run_cli(["train", "--steps", "1", "--batch-size", "2", "--max-len", "2",
                            "--n-eval", "1", "--out", tmp_path / "t.npz"])  # fmt: skip
    assert code == 0 and "roc_auc" in json.loads(out.splitlines()[-1], **strict)
    assert (
        json_text({"auc": float("nan"), "x": [1.0, float("inf")]})
        == '{"auc": null, "x": [1.0, null]}'
    )


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


# ---------------------------------------------------------------- analyze


def test_analyze_checkpoint(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4)
    params, _ = mc.train(
        config, steps=2, seed=[0, 1], batch_size=8, max_len=6, eval_every=0, n_eval=16
    )
    ck = mc.save(tmp_path / "m.npz", params, config, info={"train": {"max_len": 6, "bos": True}})
    assert main(["analyze", str(ck), "--n-eval", "24", "--member", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in result["members"]] == [1]
    assert result["members"][0]["exact"] and len(result["members"][0]["semantics"]) == 2
    out = tmp_path / "a.json"
    assert main(["analyze", str(ck), "--n-eval", "24", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["members"]) == 2


def test_analyze_bad_member_is_one_line(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=1, d_model=8, d_head=4)
    ck = mc.save(tmp_path / "m.npz", mc.init_params(config, 0), config)
    assert main(["analyze", str(ck), "--member", "3", "--n-eval", "8"]) == 2
    assert "member" in capsys.readouterr().err


def test_analyze_prints_a_summary_table_by_default(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=3, d_model=16, d_head=4)
    params, _ = mc.train(config, steps=5, seed=[0, 1], batch_size=8, max_len=6, eval_every=0,
                         n_eval=16)  # fmt: skip
    ck = mc.save(tmp_path / "m.npz", params, config, info={"train": {"max_len": 6, "bos": True}})
    assert main(["analyze", str(ck), "--n-eval", "24"]) == 0
    text = capsys.readouterr().out
    assert text.count("model ") >= 2 and "weight share" in text
    table = [ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert len(table) == 2 * 3  # one line per head of each model
    assert main(["analyze", str(ck), "--n-eval", "24", "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    auc = parsed["members"][1]["semantics"][2]["auc_two_sided"]
    assert f"{auc:.3f}" in table[5]
