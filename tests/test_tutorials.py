"""Every tutorial runs top to bottom, as a script and as a notebook, in quick mode.

Which tutorials: every ``tutorials/NN_name.py`` (found by glob, so a new tutorial is tested
as soon as it exists). Each must be a jupytext "py:percent" file.

As a script: a fresh process, as a reader would run it (``python tutorials/NN_name.py``
from the repository root), with MINICOUNT_QUICK=1 (short training) and MPLBACKEND=Agg.

As a notebook: jupytext turns the file into a notebook, and nbclient executes it in a
real IPython kernel (this interpreter, through a kernelspec written to a temporary folder,
so nothing has to be installed beforehand) whose working folder is ``tutorials/``, as in
Jupyter, with MINICOUNT_QUICK=1 and matplotlib's inline backend. The notebooks run in
parallel threads (as many as there are CPUs, up to 4), started when the first notebook
test needs them. They need the ``notebook`` extra (jupytext, nbclient, ipykernel; the
``test`` extra includes it); without it they are skipped.

Both run in a temporary copy of the repository's layout (a pyproject.toml naming minicount,
an empty tutorials/ folder), and check: no error (exit status 0; no error output in any
cell); nothing on standard error (a notebook shows it in red); every figure the file saves
with ``save_figure(fig, "NAME")`` (at least one, named ``NN_*.png``) is a PNG under
``runs/tutorial_figures/`` at the repository root, not in the working folder, which stays
empty; as a notebook, every such figure is also shown inline (an image/png output); every
exercise's reference solution passes its own check.

Optional extras: a tutorial that needs a package that is not installed (an optional extra
such as hypothesis or transformer_lens) stops in its first code cell with
``raise SystemExit("skip: this tutorial needs X: pip install -e '.[EXTRA]'") from None``
(as tutorial 04 does for hypothesis). The message must start with ``skip: ``; both tests
then skip the tutorial with that message instead of failing; any other failure fails.
Raise it ``from None``, not from the ImportError: IPython 9 fails to show a chained
SystemExit (AttributeError: 'tuple' object has no attribute 'tb_frame'), so the notebook
test could not recognise it.
"""

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import gpu_ok

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SKIP_PREFIX = "skip: "  # how a tutorial that lacks an optional extra says so (see above)
NOTEBOOK_PACKAGES = ("jupytext", "nbclient", "ipykernel")
KERNEL_NAME = "minicount-tests"


def make_repository(workdir: Path) -> Path:
    """A stand-in for the checkout: the tutorials find their root by its pyproject.toml."""
    repo = workdir / "repo"
    (repo / "tutorials").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "minicount"\n')
    return repo


def tutorial_env(**settings) -> dict:
    """This environment, quick mode, and the package under test first on the path."""
    env = dict(os.environ)
    env.pop("MINICOUNT_FIGURES", None)  # the default place is what is checked
    env.update(
        MINICOUNT_QUICK="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **settings,
    )
    return env


def run_tutorial(path: Path, repo: Path, device: str = "cpu") -> subprocess.CompletedProcess:
    """Run one tutorial as a script from the root of repo."""
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=repo,
        env=tutorial_env(MPLBACKEND="Agg", MINICOUNT_DEVICE=device),
        capture_output=True,
        text=True,
        timeout=600,
    )


def failure_report(path: Path, result: subprocess.CompletedProcess) -> str:
    tail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return f"{path.name} exited {result.returncode}:\n{tail}"


def figures_named_in(path: Path) -> list[str]:
    # each name once: a tutorial may save the same figure on two alternative branches
    return sorted(set(re.findall(r'save_figure\(\s*\w+,\s*"([^"]+)"', path.read_text())))


def check_outputs(path: Path, repo: Path, stdout: str):
    """The figures are PNGs under the root's runs/; the working folder is untouched; every
    exercise's solution passed."""
    figures = repo / "runs" / "tutorial_figures"
    expected = figures_named_in(path)
    assert expected, f"{path.name} saves no figure with save_figure(fig, 'NAME')"
    for name in expected:
        figure = figures / name
        assert figure.is_file(), f"{path.name} did not write {name} to runs/tutorial_figures/"
        assert figure.read_bytes()[:8] == PNG_MAGIC, f"{name} is not a PNG"
    assert list(figures.glob(path.name[:3] + "*.png")), "figures are named NN_*.png"
    strays = sorted(p.name for p in (repo / "tutorials").iterdir())
    assert not strays, f"{path.name} wrote into its working folder tutorials/: {strays}"
    exercises = set(re.findall(r"\[(exercise \d+[a-z]?)\]", stdout))
    for exercise in exercises:
        assert f"[{exercise}, solution] passed" in stdout, f"{path.name}: {exercise}"
    assert "not right yet" not in stdout


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
    repo = make_repository(tmp_path)
    result = run_tutorial(path, repo)
    last_line = (result.stderr.strip().splitlines() or [""])[-1]
    if result.returncode != 0 and last_line.startswith(SKIP_PREFIX):
        pytest.skip(f"{path.name}: {last_line}")
    assert result.returncode == 0, failure_report(path, result)
    assert not result.stderr.strip(), f"{path.name} wrote to stderr:\n{result.stderr[-3000:]}"
    check_outputs(path, repo, result.stdout)


# --- as notebooks ------------------------------------------------------------------------


def execute_notebook(path: Path, workdir: Path, kernel_dirs: list[str]):
    """Convert path with jupytext and execute it in a fresh kernel whose working folder is
    tutorials/ of a stand-in repository. Returns (notebook, repo); raises nbclient's
    CellExecutionError (with the cell and traceback) at the first error."""
    import jupytext
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    repo = make_repository(workdir)
    env = tutorial_env(IPYTHONDIR=str(workdir / "ipython"))  # no user profile or history
    env.pop("MPLBACKEND", None)  # the kernel picks the inline backend: figures as outputs
    notebook = jupytext.read(path)
    manager = KernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=600,  # per cell
        resources={"metadata": {"path": str(repo / "tutorials")}},  # the kernel's cwd
    )
    client.execute(env=env)
    return notebook, repo


@pytest.fixture(scope="module")
def notebook_runs(request, tmp_path_factory):
    """{path: future of execute_notebook} for every tutorial whose notebook test is selected,
    all started at once in a thread pool."""
    missing = [name for name in NOTEBOOK_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: pip install -e '.[notebook]'")
    from ipykernel.kernelspec import write_kernel_spec

    kernels = tmp_path_factory.mktemp("kernels")  # a kernelspec for this interpreter, here only
    write_kernel_spec(str(kernels / KERNEL_NAME))
    selected = [
        item.callspec.params["path"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_tutorial_runs_as_notebook"
    ]
    workers = max(1, min(len(selected), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield {
            path: pool.submit(
                execute_notebook, path, tmp_path_factory.mktemp(path.stem), [str(kernels)]
            )
            for path in selected
        }


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_as_notebook(path, notebook_runs):
    from nbclient.exceptions import CellExecutionError

    try:
        notebook, repo = notebook_runs[path].result()
    except CellExecutionError as error:
        if error.ename == "SystemExit" and str(error.evalue).startswith(SKIP_PREFIX):
            pytest.skip(f"{path.name}: {error.evalue}")
        raise
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: error cells {[(o.ename, o.evalue) for o in errors]}"
    streams = {"stdout": "", "stderr": ""}
    for output in outputs:
        if output.output_type == "stream":
            streams[output.name] += output.text
    assert not streams["stderr"].strip(), (
        f"{path.name}: stderr in the notebook:\n{streams['stderr']}"
    )
    images = sum("image/png" in output.get("data", {}) for output in outputs)
    assert images >= len(figures_named_in(path)), f"{path.name}: {images} inline images"
    check_outputs(path, repo, streams["stdout"])


GPU_TUTORIALS = [p for p in TUTORIALS if "MINICOUNT_DEVICE" in p.read_text()]


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_ok(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("path", GPU_TUTORIALS, ids=[p.stem for p in GPU_TUTORIALS])
def test_tutorial_runs_on_gpu(path, tmp_path):
    result = run_tutorial(path, make_repository(tmp_path), device="gpu")
    assert result.returncode == 0, failure_report(path, result)
    assert re.search(r"\bgpu\b", result.stdout), f"{path.name} does not say it ran on the GPU"
