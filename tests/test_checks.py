"""minicount/checks.py (and the checks beside their owners: the command line's option types,
the memory rule, a repeated seed) and the one source of defaults: every check names its field in one
line; the command line's defaults are the dataclasses' own; a resume is judged in one place
whether it comes through train() or the command line."""

import argparse
import sys
from dataclasses import fields

import numpy as np
import pytest

import minicount as mc
from minicount import checks, limits, options
from minicount.cli import build_parser, main, model_config_from_args, train_config_from_args
from minicount.data import DataConfig
from minicount.study.presets import preset
from minicount.study.spec import BASE, SEEDS, Cell, SweepSpec
from minicount.train import TrainConfig

TINY = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
train_module = sys.modules["minicount.train"]  # (minicount.train is also the train function)


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda: checks.check_int("steps", 2.5, 0), "steps must be a whole number >= 0"),
        (lambda: checks.check_int("steps", True, 0), "steps must be a whole number"),
        (lambda: checks.check_int("n_eval", 0, 1), "n_eval must be >= 1, got 0"),
        (
            lambda: checks.check_number("lr", 0.0, low=0.0, low_open=True),
            r"lr must .* \(0.0, inf\]",
        ),
        (lambda: checks.check_number("lr", float("nan"), low=0.0), "lr must be a finite number"),
        (lambda: checks.check_number("lr", "0.1", low=0.0), "lr must be a number"),
        (lambda: checks.check_bool("bos", 1), "bos must be True or False, got 1"),
        (lambda: checks.check_choice("dtype", "float16", ("float32",)), "unknown dtype 'float16'"),
        (lambda: checks.check_probs((0.5, 0.5)), "probs must be 3"),
        (lambda: checks.check_probs((0.5, 0.0, 0.5)), r"P\(1\) must be > 0"),
        (lambda: checks.check_seeds("3"), "seeds must be a list"),
        (lambda: checks.check_seeds([]), "at least one seed"),
        (lambda: checks.check_seeds([0, -1]), "seed must be >= 0"),
        (lambda: checks.check_seeds(range(2000)), "over the limit"),
    ],
)
def test_each_check_refuses_in_one_line_naming_the_field(call, words):
    with pytest.raises(ValueError, match=words) as e:
        call()
    assert "\n" not in str(e.value)


def test_checks_return_the_value_converted():
    assert checks.check_int("n", np.int64(3), 0) == 3 and type(checks.check_int("n", 3, 0)) is int
    assert checks.check_number("lr", 1, low=0.0) == 1.0
    assert checks.check_seeds(7) == (7,) and checks.check_seeds(np.arange(3)) == (0, 1, 2)
    assert checks.check_probs([0.5, 0.25, 0.25]).tolist() == [0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: mc.ModelConfig(d_model=0), "ModelConfig.d_model must be >= 1"),
        (lambda: mc.ModelConfig(mlp="yes"), "ModelConfig.mlp must be True or False"),
        (lambda: DataConfig(bos=1), "bos must be True or False"),
        (lambda: DataConfig(eval_seed=-1), "eval_seed must be >= 0"),
        (lambda: TrainConfig(path="slow"), "unknown path 'slow'"),
        (lambda: TrainConfig(beta1=1.0), "beta1"),
        (lambda: Cell(p2=1.0), r"p2 \(the share of 2s\)"),
        (lambda: Cell(n_heads=17), "at most 16 heads"),
        (lambda: Cell(lr=-1.0), "lr must"),
        (lambda: SweepSpec(cells=(BASE,), names=("a",), seeds=(0,), n_eval=0), "n_eval must"),
        (lambda: SweepSpec(cells=(BASE,), names=("a",), seeds=(-1,)), "seed must be >= 0"),
    ],
)
def test_the_dataclasses_check_themselves_through_checks(make, words):
    with pytest.raises(ValueError, match=words):
        make()


@pytest.mark.parametrize(
    "text,ok",
    [("3", True), ("-1", False), ("x", False), ("2.5", False)],
)
def test_argparse_types_are_the_checks(text, ok):
    convert = options.int_option(0)
    if ok:
        assert convert(text) == int(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            convert(text)
    assert options.seeds_option("0-3") == [0, 1, 2, 3] and options.heads_option("1,2") == [1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        options.number_option("inf")


def test_a_repeated_seed_is_refused_by_train_as_by_the_sweep(capsys):
    with pytest.raises(ValueError, match="a seed is repeated"):
        mc.train(TINY, seed=[0, 0], steps=1)
    assert main(["train", "--seeds", "0,0", "--steps", "1"]) == 2
    train_err = capsys.readouterr().err
    with pytest.raises(ValueError, match="a seed is repeated"):
        SweepSpec(cells=[Cell()], names=["c"], seeds=(0, 0))
    assert "a seed is repeated" in train_err


def test_one_memory_rule_for_training_and_the_sweep(monkeypatch):
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", str(2**30))
    shape = (TINY, 4, 64, 17)
    need = limits.training_bytes(*shape, 256)
    assert limits.fits(*shape, "cpu", n_eval=256) == (need <= 2**30)
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", str(need))
    assert limits.fits(*shape, "cpu", n_eval=256)  # 100% of the limit, no margin
    monkeypatch.setenv("MINICOUNT_MAX_MEMORY", str(need - 1))
    assert not limits.fits(*shape, "cpu", n_eval=256)


# ---------------------------------------------------------------- one source of defaults


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def test_train_defaults_on_the_command_line_are_the_dataclasses():
    """Parsing 'train' with no option gives TrainConfig() and ModelConfig() field by field:
    a default retyped in the CLI that drifts from its dataclass fails here."""
    a = build_parser().parse_args(["train"])
    tc, config = train_config_from_args(a), model_config_from_args(a)
    for name, value in TrainConfig().to_dict().items():
        assert tc.to_dict()[name] == value, name
    for name, value in mc.ModelConfig().to_dict().items():
        assert config.to_dict()[name] == value, name


def test_eval_sweep_and_analyze_defaults_are_the_dataclasses():
    p = build_parser()
    e = p.parse_args(["eval", "x.npz"])
    assert (e.n_eval, e.eval_seed) == (DataConfig.n_eval, DataConfig.eval_seed)
    s = p.parse_args(["sweep"])
    spec = _defaults(SweepSpec)
    assert (s.batch_size, s.n_eval, s.first_snapshot) == (
        spec["batch_size"], spec["n_eval"], spec["first_snapshot"]
    )  # fmt: skip
    assert s.default_steps == Cell.steps and tuple(s.seeds) == SEEDS
    assert p.parse_args(["analyze", "x.npz"]).n_eval == spec["n_eval"]
    for command in (["train"], ["eval", "x.npz"], ["sweep"], ["analyze", "x.npz"]):
        assert p.parse_args(command).device == TrainConfig.device


def test_the_defaults_are_shared_not_retyped():
    """The values the issue found retyped: symbol probabilities, max_len, lr, n_eval."""
    assert TrainConfig.probs is DataConfig.probs is mc.data.UNIFORM
    assert Cell.p2 == DataConfig.probs[2] and Cell.max_len == DataConfig.max_len
    assert TrainConfig.max_len == DataConfig.max_len and TrainConfig.n_eval == DataConfig.n_eval
    assert Cell.lr == TrainConfig.lr == mc.optim.AdamW.lr
    assert (Cell.n_heads, Cell.d_model, Cell.d_head) == (
        mc.ModelConfig.n_heads, mc.ModelConfig.d_model, mc.ModelConfig.d_head
    )  # fmt: skip
    full = preset("full")
    assert (full.batch_size, full.n_eval) == (SweepSpec.batch_size, SweepSpec.n_eval)
    assert {c.max_len for c in full.cells} == {BASE.max_len, 2 * BASE.max_len}


def test_train_takes_its_defaults_from_train_config(monkeypatch):
    seen = {}

    def fake(config, tc, **kw):
        seen["tc"] = tc
        return {}, {}

    monkeypatch.setattr(train_module, "train_with_config", fake)
    mc.train(TINY)
    assert seen["tc"] == TrainConfig()


# ---------------------------------------------------------------- resume, judged once


def test_cli_and_train_refuse_a_changed_resume_in_the_same_words(tmp_path, capsys):
    ck = str(tmp_path / "r.npz")
    run = dict(steps=4, batch_size=4, max_len=4, eval_every=0, n_eval=16, lr=0.01)
    mc.train(TINY, checkpoint=ck, **run)
    with pytest.raises(ValueError) as e:
        mc.train(TINY, resume=ck, **(run | dict(steps=6, lr=0.02)))
    from_train = str(e.value)
    assert main(["train", "--resume", ck, "--steps", "6", "--lr", "0.02"]) == 2
    err = capsys.readouterr().err
    assert "lr=0.01 vs 0.02" in from_train and from_train.split("(", 1)[1] in err


def test_cli_resume_keeps_the_saved_settings_and_changes_only_what_is_given(tmp_path, capsys):
    ck = str(tmp_path / "r.npz")
    argv = ["train", "--d-model", "8", "--n-heads", "2", "--d-head", "4", "--batch-size", "4",
            "--max-len", "4", "--eval-every", "0", "--n-eval", "16", "--lr", "0.01"]  # fmt: skip
    assert main(argv + ["--steps", "3", "--out", ck]) == 0
    assert main(["train", "--resume", ck, "--steps", "5", "--checkpoint-every", "2"]) == 0
    train = mc.load_checkpoint(ck)["info"]["train"]
    assert train["steps"] == 5 and train["checkpoint_every"] == 2 and train["lr"] == 0.01
    assert main(["train", "--resume", ck, "--steps", "6", "--d-model", "16"]) == 2
    assert "another model" in capsys.readouterr().err
