"""What the tutorials share: where their outputs go, showing a figure in a notebook, and
checking a reader's exercise.

A tutorial runs as a script from the repository root and as a notebook whose kernel starts
in tutorials/; both write to the same place, the repository's runs/ folder.

It creates the tutorials' output folders under the repository's runs/ and saves figures
there; it shows figures through pyplot only inside a notebook.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def repository_root() -> Path:
    """The minicount checkout around the working folder (the first folder upward whose
    pyproject.toml names minicount), or the working folder itself outside one. A script run
    from the root and a notebook (its kernel starts in tutorials/) find the same root."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        marker = folder / "pyproject.toml"
        if marker.is_file() and 'name = "minicount"' in marker.read_text():
            return folder
    return here


def runs_folder() -> Path:
    """The repository's runs/: everything a tutorial writes goes under it."""
    return repository_root() / "runs"


def figures_folder() -> Path:
    """Where tutorial figures go ($MINICOUNT_FIGURES, else runs/tutorial_figures), created."""
    folder = Path(os.environ.get("MINICOUNT_FIGURES", runs_folder() / "tutorial_figures"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def save_figure(fig, name: str) -> Path:
    """Save fig under figures_folder(); in a notebook also show it below the cell, as a script
    close it (no window to close by hand). Returns the path written."""
    import matplotlib.pyplot as plt

    path = figures_folder() / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"figure saved: {path}")
    if in_notebook():
        plt.show()
    else:
        plt.close(fig)
    return path


def check_exercise(name: str, attempt, test, explain=None) -> bool:
    """Run test(attempt) and say how the exercise stands: passed, not right yet (the failed
    assertion, and explain(failure) when given), or not done yet (a stub that raises
    NotImplementedError). Returns whether it passed; never raises for a wrong attempt."""
    try:
        test(attempt)
    except NotImplementedError:
        print(f"[{name}] not done yet: fill in the function and run this cell again")
        return False
    except AssertionError as failure:
        extra = f"\n{explain(failure)}" if explain is not None else ""
        print(f"[{name}] not right yet: {failure}{extra}")
        return False
    print(f"[{name}] passed")
    return True
