"""NumPy or CuPy: the array module of the inputs, the device choice, host <-> device moves.

Every array function in minicount asks its inputs which module they belong to
(``array_module(x)``) instead of importing one globally. CuPy is imported only when
a GPU is asked for or a CuPy array is seen, so the CPU path never needs it.

Data moves between host and device only through ``to_device`` / ``to_numpy``;
random numbers are always drawn on the host with a NumPy Generator, so one seed
gives one model on both backends.
"""

from __future__ import annotations

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


def gpu_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device: str) -> str:
    """Turn 'cpu' | 'gpu' | 'auto' into 'cpu' or 'gpu', with a clear error if 'gpu' can't be had."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise ValueError(
            "device 'gpu' asked for, but CuPy is not installed or sees no CUDA GPU "
            "(install the extra: pip install 'minicount[gpu]', or use --device cpu)"
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
