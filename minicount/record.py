"""What a result records besides its numbers, in one place: values made JSON-ready
(``jsonable``, ``json_text``) and the versions that produced it (``versions``, ``version``).

Every JSON file and JSON line minicount writes goes through ``jsonable``: NumPy and CuPy
arrays and scalars become lists, floats and ints, objects with ``to_dict`` (stats.Interval)
their dicts, and NaN and infinities None, so the JSON is valid (``allow_nan=False``).

It reads its arguments (and, for ``version``, the installed package's metadata) and
returns new values; it imports only minicount.backend.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version
from pathlib import Path

import numpy as np

from .backend import to_numpy


def jsonable(obj):
    """Arrays, NumPy scalars, objects with to_dict and nested containers -> lists, dicts,
    floats, ints; nan/inf -> None."""
    kind = type(obj)  # the common leaves first: a result holds thousands of them
    if kind is float:
        return obj if math.isfinite(obj) else None
    if kind is int or kind is bool or kind is str or obj is None:
        return obj
    if isinstance(obj, np.generic):  # a NumPy scalar: as np.asarray(obj).tolist() would give
        return jsonable(obj.item())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return jsonable(np.asarray(to_numpy(obj)).tolist())
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def json_text(obj, **options) -> str:
    """obj as valid JSON text (``jsonable``, then json.dumps with allow_nan=False)."""
    return json.dumps(jsonable(obj), allow_nan=False, **options)


@functools.cache
def version() -> str:
    """minicount's version: the installed package's, else (run from a checkout that is not
    installed, through PYTHONPATH) the one pyproject.toml beside the package names, else
    '0+unknown'."""
    try:
        return _installed_version("minicount")
    except PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    except OSError:
        return "0+unknown"
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "0+unknown"


def versions(device: str = "cpu") -> dict:
    """The versions that produced a result: minicount, NumPy, Python, the platform, and
    CuPy's on the GPU. The one record of them (checkpoints, results.json, train's output)."""
    v = {
        "minicount": version(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device == "gpu":
        import cupy

        v["cupy"] = cupy.__version__
    return v
