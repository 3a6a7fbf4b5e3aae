import json
import subprocess
import sys

import pytest

from minicount.cli import main


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
