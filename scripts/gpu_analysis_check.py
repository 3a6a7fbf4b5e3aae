"""analyze_ensemble on the GPU (CuPy) against the CPU (NumPy) on the same trained models.

    python scripts/gpu_analysis_check.py --models 1000 --device gpu --out DIR

Trains --models default models together (one shared batch per step, so that a thousand fit
in seconds), analyses all of them on --device and on the CPU, and compares every number of
the two results leaf by leaf: the largest absolute difference per kind of quantity, and the
count of leaves further apart than --tol (relative to the value, or absolute below 1).
Accuracies are counts over positions, so a score on the wrong side of 0 by rounding moves
them by 1/N; those are reported as such. Writes DIR/analysis_check.json and prints a summary.
With --device cpu it compares NumPy with NumPy (a dry run of the script itself).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import minicount as mc
from minicount.analysis import analyze_ensemble
from minicount.backend import to_device


def leaves(obj, path=""):
    """(path, number) for every numeric leaf of a nested dict/list."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, float(obj)


def kind(path: str) -> str:
    """'aggregation.fitted.l_acc' for 'aggregation.fitted.l_acc' under any index."""
    return ".".join(p.split("[")[0] for p in path.split("."))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--device", default="gpu")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--out", default="runs/gpu_analysis_check")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    config = mc.ModelConfig()
    path = "fused" if a.device == "gpu" else "fast"
    t0 = time.perf_counter()
    params, _ = mc.train(
        config,
        seed=list(range(a.models)),
        steps=a.steps,
        data_seed=0,
        device=a.device,
        path=path,
        eval_every=0,
        n_eval=64,
        batch_size=128,
    )
    t1 = time.perf_counter()
    held_out = mc.data.eval_set(mc.data.DataConfig(n_eval=a.n_eval))
    on_device = analyze_ensemble(to_device(params, a.device), *held_out, config)
    t2 = time.perf_counter()
    on_cpu = analyze_ensemble(params, *held_out, config)
    t3 = time.perf_counter()
    worst, over, n_leaves = defaultdict(float), defaultdict(int), 0
    for dev, cpu in zip(on_device, on_cpu, strict=True):
        a_leaves, b_leaves = dict(leaves(dev)), dict(leaves(cpu))
        if a_leaves.keys() != b_leaves.keys():
            raise SystemExit("the two results differ in their keys")
        for k, x in a_leaves.items():
            y = b_leaves[k]
            if math.isnan(x) and math.isnan(y):
                continue
            n_leaves += 1
            d = abs(x - y)
            kk = kind(k)
            worst[kk] = max(worst[kk], d)
            if d > a.tol * max(1.0, abs(y)):
                over[kk] += 1
    report = {
        "models": a.models, "steps": a.steps, "n_eval": a.n_eval, "device": a.device,
        "seconds": {"train": t1 - t0, "analysis_device": t2 - t1, "analysis_cpu": t3 - t2},
        "leaves_compared": n_leaves, "tol": a.tol,
        "leaves_over_tol": dict(sorted(over.items(), key=lambda kv: -kv[1])),
        "worst_abs_diff": dict(sorted(worst.items(), key=lambda kv: -kv[1])[:25]),
    }  # fmt: skip
    (out / "analysis_check.json").write_text(json.dumps(report, indent=1))
    print(
        f"{a.models} models x {a.steps} steps trained on {a.device} in {t1 - t0:.1f} s; "
        f"analysed on {a.device} in {t2 - t1:.1f} s, on the CPU in {t3 - t2:.1f} s"
    )
    print(
        f"{n_leaves} numbers compared; over tol {a.tol}: {sum(over.values())} "
        f"({', '.join(f'{k}: {v}' for k, v in list(report['leaves_over_tol'].items())[:6])})"
    )
    for k, v in list(report["worst_abs_diff"].items())[:10]:
        print(f"  largest |difference| {v:.3g}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
