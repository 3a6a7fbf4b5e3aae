"""analyze_model (minicount/analysis/analyze.py): every instrument at once, JSON-ready, an
inexact config said so, and the same numbers on a GPU."""

import json

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import analyze_model


def test_analyze_model_is_json_ready(held_out):
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4)
    params = mc.init_params(config, 0)
    result = analyze_model(params, tokens[:40], targets[:40], mask[:40], config)
    text = json.dumps(result, allow_nan=False)
    assert result["exact"] and len(result["semantics"]) == 2
    assert {"metrics", "attention", "ablation", "aggregation", "linear", "interventions"} <= set(
        result
    )
    assert len([r for r in result["ablation"]["zero"] if r["kind"] == "subset"]) == 4
    assert "NaN" not in text


def test_contribution_summary_within_each_class(held_out):
    from minicount.analysis.analyze import contribution_summary
    from minicount.analysis.attribution import eos_contributions
    from minicount.data import EOS

    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=3, d_model=16, d_head=4)
    c, _ = eos_contributions(mc.init_params(config, 2), tokens, config)  # [H, B, T]
    c = np.asarray(c, dtype=np.float64)
    got = contribution_summary(c, targets, mask)
    y = targets[..., EOS] > 0.5
    for h in range(3):
        pos, neg = c[h][mask & y], c[h][mask & ~y]
        assert got["sd_pos"][h] == pytest.approx(np.sqrt(np.mean((pos - pos.mean()) ** 2)))
        assert got["sd_neg"][h] == pytest.approx(np.sqrt(np.mean((neg - neg.mean()) ** 2)))
        assert got["mean_pos"][h] == pytest.approx(pos.mean())
        assert got["std"][h] == pytest.approx(c[h][mask].std())
    assert got["sd_pos"].min() > 0 and not np.allclose(got["sd_pos"], got["sd_neg"])


def test_analyze_model_on_an_inexact_config_says_so(held_out):
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=2, d_model=16, d_head=4, mlp=True, d_mlp=16)
    result = analyze_model(mc.init_params(config, 0), tokens[:20], targets[:20], mask[:20], config)
    assert result["exact"] is False and "mlp" in result["exact_problem"]
    assert result["aggregation"] is None and result["semantics"][0]["auc_alone"] is None
    json.dumps(result, allow_nan=False)


def numbers(obj):
    """Every number in a nested JSON-ready structure, in order (None kept as nan)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers(v)]
    if obj is None or isinstance(obj, (bool, int, float)):
        return [float("nan") if obj is None else float(obj)]
    return []


@pytest.mark.gpu
def test_analyze_model_on_gpu_matches_cpu(held_out):
    from minicount.backend import to_device

    from .conftest import gpu_ok

    if not gpu_ok():
        pytest.skip("needs CuPy and a CUDA GPU")
    tokens, targets, mask = held_out
    config = mc.ModelConfig(n_heads=3)
    params = {k: v.astype(np.float64) for k, v in mc.init_params(config, 1).items()}
    cpu = analyze_model(params, tokens, targets, mask, config)
    gpu = analyze_model(to_device(params, "gpu"), tokens, targets, mask, config)
    keys = ("metrics", "aggregation", "contributions", "semantics", "attention", "ablation",
            "interventions")  # fmt: skip
    for key in keys:
        np.testing.assert_allclose(
            numbers(gpu[key]), numbers(cpu[key]), rtol=1e-6, atol=1e-9, err_msg=key
        )


def test_jsonable_turns_every_leaf_into_plain_json():
    from minicount.analysis import jsonable

    got = jsonable(
        {
            1: (np.float32(1.5), np.float64(np.nan), float("inf"), -0.0, 2.5),
            "ints": [np.int64(3), 4, np.arange(2)],
            "flags": [True, np.bool_(False), np.array([True])],
            "text": ["a", None],
            "array": np.array([[1.0, np.inf]], dtype=np.float32),
        }
    )
    want = {
        "1": [1.5, None, None, -0.0, 2.5],
        "ints": [3, 4, [0, 1]],
        "flags": [True, False, [True]],
        "text": ["a", None],
        "array": [[1.0, None]],
    }
    assert got == want
    leaves = [*got["1"], *got["ints"][:2], *got["flags"][:2]]
    assert [type(v) for v in leaves] == [
        float,
        type(None),
        type(None),
        float,
        float,
        int,
        int,
        bool,
        bool,
    ]


def test_the_single_model_instruments_refuse_an_ensemble():
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    tokens, targets, mask = mc.data.eval_set(mc.data.DataConfig(max_len=6, n_eval=8))
    ensemble = mc.init_ensemble(config, [0, 1])
    with pytest.raises(ValueError, match="single model.*minicount.member"):
        analyze_model(ensemble, tokens, targets, mask, config)
    analyze_model(mc.member(ensemble, 1), tokens, targets, mask, config)  # one member is fine
