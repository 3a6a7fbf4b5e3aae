"""Every tutorial runs top to bottom as a script, in quick mode, and writes its figures.

Each tutorials/NN_name.py runs in a fresh process, as a reader would run it
(``python tutorials/NN_name.py``), in a temporary working directory, with
MINICOUNT_QUICK=1 (short training), MPLBACKEND=Agg (no display) and MINICOUNT_FIGURES
pointing into the temporary directory. The checks: exit status 0; every figure the file
saves with ``save_figure(fig, "NAME")`` exists and is a PNG (and there is at least one,
named ``NN_*.png``); every exercise's reference solution passes its own check.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import gpu_ok

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_tutorial(path: Path, workdir: Path, device: str = "cpu") -> subprocess.CompletedProcess:
    """Run one tutorial as a script in workdir; the package under test comes first on the path."""
    env = dict(os.environ)
    env.update(
        MINICOUNT_QUICK="1",
        MPLBACKEND="Agg",
        MINICOUNT_DEVICE=device,
        MINICOUNT_FIGURES=str(workdir / "figures"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def failure_report(path: Path, result: subprocess.CompletedProcess) -> str:
    tail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return f"{path.name} exited {result.returncode}:\n{tail}"


def figures_named_in(path: Path) -> list[str]:
    return re.findall(r'save_figure\(\s*\w+,\s*"([^"]+)"', path.read_text())


def test_the_tutorials_are_there():
    names = [p.name for p in TUTORIALS]
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_"):
        assert any(n.startswith(prefix) for n in names), f"no tutorial {prefix}*.py in {names}"
    for path in TUTORIALS:
        text = path.read_text()
        assert text.startswith("# ---\n# jupyter:"), f"{path.name}: no jupytext header"
        assert "format_name: percent" in text and "\n# %%" in text, f"{path.name}: not py:percent"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_quick_mode(path, tmp_path):
    result = run_tutorial(path, tmp_path)
    assert result.returncode == 0, failure_report(path, result)
    expected = figures_named_in(path)
    assert expected, f"{path.name} saves no figure with save_figure(fig, 'NAME')"
    for name in expected:
        figure = tmp_path / "figures" / name
        assert figure.is_file(), f"{path.name} did not write {name}"
        assert figure.read_bytes()[:8] == PNG_MAGIC, f"{name} is not a PNG"
    assert list((tmp_path / "figures").glob(path.name[:3] + "*.png")), "figures are named NN_*.png"
    exercises = set(re.findall(r"\[(exercise \d+[a-z]?)\]", result.stdout))
    for exercise in exercises:
        assert f"[{exercise}, solution] passed" in result.stdout, f"{path.name}: {exercise}"
    assert "not right yet" not in result.stdout


GPU_TUTORIALS = [p for p in TUTORIALS if "MINICOUNT_DEVICE" in p.read_text()]


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_ok(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("path", GPU_TUTORIALS, ids=[p.stem for p in GPU_TUTORIALS])
def test_tutorial_runs_on_gpu(path, tmp_path):
    result = run_tutorial(path, tmp_path, device="gpu")
    assert result.returncode == 0, failure_report(path, result)
    assert re.search(r"\bgpu\b", result.stdout), f"{path.name} does not say it ran on the GPU"
