"""The reproduce study and the analyze command, end to end on tiny runs."""

import csv
import json

import numpy as np
import pytest

import minicount as mc
from minicount.cli import main
from minicount.study import PRESETS, VARIATIONS, Preset, fmt, mean_sd, study_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_run_writes_every_promised_file(quick_run):
    for name in ("report.md", "results.json", "runs.csv", "heads.csv"):
        assert (quick_run / name).is_file(), name
    figures = sorted((quick_run / "figures").glob("*.png"))
    names = {f.name for f in figures}
    assert {
        "accuracy.png",
        "weights.png",
        "heads.png",
        "ablation.png",
        "interventions.png",
        "training.png",
    } <= names
    assert any(n.startswith("patterns_") for n in names)
    import matplotlib.image

    for f in figures:
        assert f.read_bytes()[:8] == PNG_MAGIC, f
        image = matplotlib.image.imread(f)
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_quick_run_results_match_the_preset(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    preset = PRESETS["quick"]
    names = [s["setting"]["name"] for s in results["settings"]]
    assert names == [s.name for s in study_settings(preset)]
    for s in results["settings"]:
        assert [m["seed"] for m in s["members"]] == list(preset.seeds)
        for m in s["members"]:
            a = m["analysis"]
            assert (
                0 <= a["metrics"]["l_acc"] <= 1 and len(a["semantics"]) == s["setting"]["n_heads"]
            )
    with open(quick_run / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    with open(quick_run / "heads.csv") as f:
        heads = list(csv.DictReader(f))
    n_models = len(names) * len(preset.seeds)
    assert len(runs) == n_models
    assert len(heads) == sum(s["setting"]["n_heads"] for s in results["settings"]) * len(
        preset.seeds
    )


def test_report_tables_come_from_the_run(quick_run):
    report = (quick_run / "report.md").read_text()
    for section in (
        "## What was run",
        "## Compete or cooperate?",
        "## Against the paper's claims",
        "### 1. Accuracy and aggregation",
        "figures/accuracy.png",
    ):
        assert section in report, section
    with open(quick_run / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    # the l-acc cell of the first setting is the mean ± sd of the per-seed values in runs.csv
    first = [float(r["l_acc"]) for r in runs if r["setting"] == runs[0]["setting"]]
    assert f"| {runs[0]['setting']} | {fmt(first)} |" in report


def test_mean_sd_and_fmt():
    assert mean_sd([1.0, 3.0, None]) == (2.0, pytest.approx(np.sqrt(2.0)), 2)
    assert fmt([0.5]) == "0.500" and fmt([None]) == "–"
    assert fmt([1.0, 3.0], 1) == "2.0 ± 1.4"


def test_presets_and_variations():
    full = study_settings(PRESETS["full"])
    assert [s.n_heads for s in full if s.sweep] == [1, 2, 4, 8]
    assert {s.name.split(", ", 1)[1] for s in full if not s.sweep} == set(VARIATIONS)
    default = study_settings(PRESETS["default"])
    paper = [s for s in default if "paper-like" in s.name]
    assert paper and paper[0].max_len == 64 and paper[0].weight_decay == 0.1
    with pytest.raises(ValueError, match="unknown variation"):
        study_settings(Preset(variations=("nope",)))


def test_analyze_checkpoint(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4)
    params, _ = mc.train(
        config, steps=2, seed=[0, 1], batch_size=8, max_len=6, eval_every=0, n_eval=16
    )
    ck = mc.save(tmp_path / "m.npz", params, config, info={"train": {"max_len": 6, "bos": True}})
    assert main(["analyze", str(ck), "--n-eval", "24", "--member", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in result["members"]] == [1]
    assert result["members"][0]["exact"] and len(result["members"][0]["semantics"]) == 2
    out = tmp_path / "a.json"
    assert main(["analyze", str(ck), "--n-eval", "24", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["members"]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["reproduce", "--heads", "0"],
        ["reproduce", "--steps", "x"],
        ["reproduce", "--preset", "huge"],
    ],
)
def test_bad_reproduce_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_analyze_bad_member_is_one_line(tmp_path, capsys):
    config = mc.ModelConfig(n_heads=1, d_model=8, d_head=4)
    ck = mc.save(tmp_path / "m.npz", mc.init_params(config, 0), config)
    assert main(["analyze", str(ck), "--member", "3", "--n-eval", "8"]) == 2
    assert "member" in capsys.readouterr().err
