"""NumPy or CuPy: the array module of the inputs, the device choice, host <-> device moves.

Every array function in minicount asks its inputs which module they belong to
(``array_module(x)``) instead of importing one globally. CuPy is imported only when
a GPU is asked for or a CuPy array is seen, so the CPU path never needs it.

Data moves between host and device only through ``to_device`` / ``to_numpy``;
random numbers are always drawn on the host with a NumPy Generator, so one seed
gives one model on both backends.

CuPy is imported only when an array or a request needs it; nothing global changes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

DEVICES = ("cpu", "gpu", "auto")


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(*arrays: Any):
    """The module (numpy or cupy) that owns the given arrays; numpy if none is a CuPy array."""
    for a in arrays:
        if _is_cupy_array(a):
            import cupy

            return cupy
    return np


# CuPy's wheel for each CUDA major version, and the extra that installs it
CUPY_WHEELS = {11: "cupy-cuda11x", 12: "cupy-cuda12x", 13: "cupy-cuda13x"}
EXTRAS = {12: "gpu-cuda12", 13: "gpu-cuda13"}
INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver: the runtime is newer than the driver


def _cuda_version(number: int) -> str:
    """12040 -> '12.4' (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _cupy_package() -> str:
    """The name of the installed CuPy distribution (cupy-cuda12x, ...), or 'cupy'."""
    for name in [*CUPY_WHEELS.values(), "cupy"]:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return "cupy"


def _driver_mismatch(cupy, error: Exception) -> str | None:
    """A one-line explanation if ``error`` says CuPy's CUDA is newer than the driver."""
    status = getattr(error, "status", None)
    text = str(error)
    if status != INSUFFICIENT_DRIVER and "InsufficientDriver" not in text:
        return None
    try:
        driver = cupy.cuda.runtime.driverGetVersion()  # asks the driver, needs no context
    except Exception:
        driver = 0
    try:
        runtime = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
    except Exception:
        runtime = "a newer CUDA"
    package = _cupy_package()
    if not driver:
        return (
            f"the installed CuPy ({package}, CUDA {runtime}) needs a newer NVIDIA driver "
            "than this machine has: install the CuPy wheel for the driver's CUDA version "
            "(nvidia-smi shows it), e.g. pip install 'minicount[gpu-cuda12]'"
        )
    major = driver // 1000
    wheel = CUPY_WHEELS.get(major, f"cupy-cuda{major}x")
    how = f"pip install 'minicount[{EXTRAS[major]}]'" if major in EXTRAS else f"pip install {wheel}"
    return (
        f"the installed CuPy ({package}) is built for CUDA {runtime}, but this machine's "
        f"NVIDIA driver supports CUDA {_cuda_version(driver)} at most: uninstall it and "
        f"install {wheel} ({how}), or update the driver"
    )


def _gpu_problem() -> tuple[str, str] | None:
    """(kind, one line) saying why CuPy cannot use a GPU here, or None when it can.
    kind: 'missing' (no CuPy), 'mismatch' (CuPy for a newer CUDA than the driver's),
    'no-gpu'."""
    try:
        import cupy
    except Exception as e:
        return "missing", f"CuPy is not installed or does not import ({type(e).__name__}: {e})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        mismatch = _driver_mismatch(cupy, e)
        if mismatch:
            return "mismatch", mismatch
        return "no-gpu", f"CuPy sees no CUDA GPU ({type(e).__name__}: {e})"
    return None if count > 0 else ("no-gpu", "CuPy sees no CUDA GPU")


def gpu_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    return _gpu_problem() is None


def resolve_device(device: str) -> str:
    """Turn 'cpu' | 'gpu' | 'auto' into 'cpu' or 'gpu', with a clear error if 'gpu' can't be had.

    CuPy built for a newer CUDA than the driver's gets its own one-line error naming the
    installed package, the driver's CUDA version and the wheel to install instead.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    problem = _gpu_problem() if device == "gpu" else None
    if problem is not None:
        kind, line = problem[0], " ".join(problem[1].split())
        if kind == "mismatch":
            raise ValueError(f"device 'gpu' asked for: {line}")
        raise ValueError(
            f"device 'gpu' asked for, but {line} (install the CuPy extra for the machine's "
            "CUDA: pip install 'minicount[gpu-cuda12]' or 'minicount[gpu-cuda13]'; or use "
            "--device cpu)"
        )
    return device


def get_xp(device: str):
    """The array module for a resolved device name."""
    if resolve_device(device) == "gpu":
        import cupy

        return cupy
    return np


def to_numpy(x: Any) -> Any:
    """Copy an array (or a dict/list/tuple of arrays) to the host. NumPy arrays pass through."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x)
    if _is_cupy_array(x):
        return x.get()
    return x


def to_device(x: Any, device: str) -> Any:
    """Move an array (or a dict/list/tuple of arrays) to 'cpu' or 'gpu' explicitly."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if resolve_device(device) == "gpu":
        import cupy

        return cupy.asarray(x)
    return to_numpy(x)


def device_of(x: Any) -> str:
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "gpu" if _is_cupy_array(x) else "cpu"
