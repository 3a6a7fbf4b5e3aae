"""The GPU script's CPU dry run: scripts/gpu_run.sh with DEVICE=cpu and tiny sizes runs every
part it would run on a GPU (the step-rate measurement, both long arms with kept snapshots, the
analysis comparison), so that it cannot rot while no GPU is lent."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_dry_run_on_the_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SEEDS": "0-1", "MAX_LEN": "5", "LONG_BUDGET": "2",
           "TESTS": "0", "ANALYSIS_MODELS": "2", "ANALYSIS_STEPS": "10", "PY": "python",
           "EXTRA": "--set d_model=8 --set d_head=4 --batch-size 8 --n-eval 16 "
                    "--first-snapshot 2500 --threads 1"}  # fmt: skip
    out = tmp_path / "gpu"
    done = subprocess.run(["bash", "scripts/gpu_run.sh", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "run.log").read_text()
    assert "LONG_STEPS=5000" in log and log.rstrip().endswith("done")
    assert re.search(r"measured [0-9.]+ steps/s", log), log  # the rate was measured, not guessed
    unpacked = tmp_path / "unpacked"  # the arms come back as parts of one archive
    unpacked.mkdir()
    parts = sorted(out.glob("long64.tgz.part_*"))
    subprocess.run(f"cat {' '.join(map(str, parts))} | tar xzf - -C {unpacked}", shell=True,
                   check=True)  # fmt: skip
    for arm in ("constant", "cosine"):
        kept = list((unpacked / f"long64_{arm}" / "cells").glob("*/snapshots/step_0005000.npz"))
        assert len(kept) == 1, (arm, (out / f"long64_{arm}.log").read_text())
        assert not list((unpacked / f"long64_{arm}").rglob("model.npz"))  # left behind
    check = json.loads((out / "analysis_check.json").read_text())
    assert check["leaves_compared"] > 100 and check["leaves_over_tol"] == {}
