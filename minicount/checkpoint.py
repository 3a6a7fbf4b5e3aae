"""Checkpoints as plain .npz files: no pickle, so loading one never executes anything.

Layout (every entry a NumPy array):
    meta:format        "minicount-checkpoint-v1"
    meta:config        the ModelConfig as JSON
    meta:info          JSON: training settings, step, RNG states, versions (optional)
    param:<name>       each parameter under its SPEC name, e.g. param:blocks.0.attn.W_Q
    opt:<name>         optimiser moments, e.g. opt:m.embed.W_E (optional)

Files are written atomically (a temporary file in the same folder, then a rename), so a
run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .model import ModelConfig, check_params, param_shapes

FORMAT = "minicount-checkpoint-v1"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def npz_path(path) -> Path:
    """The file a checkpoint path names: the path itself if it ends in .npz, else path + '.npz'."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save(
    path,
    params: dict,
    config: ModelConfig,
    *,
    opt_state: dict | None = None,
    info: dict | None = None,
) -> Path:
    """Write a checkpoint atomically; parameters on any device are copied to the host first.

    params must match config (``model.check_params``); opt_state is an AdamW state
    ({'step', 'm.<name>', 'v.<name>'}); info any JSON-able dict. A path without the .npz
    suffix gets it. Returns the path written.
    """
    check_params(params, config)
    path = npz_path(path)
    arrays = {"meta:format": np.array(FORMAT), "meta:config": _json_array(config.to_dict())}
    if info is not None:
        arrays["meta:info"] = _json_array(info)
    for k, v in params.items():
        arrays["param:" + k] = to_numpy(v)
    if opt_state is not None:
        for k, v in opt_state.items():
            if k != "step":
                arrays["opt:" + k] = to_numpy(v)
        arrays["meta:opt_step"] = np.array(int(opt_state["step"]))
    _write_atomically(path, arrays)
    return path


def check_writable(path) -> Path:
    """Make sure a checkpoint can be written at path (creating its folder) before any work is
    done that would need it; returns the .npz path. OSError naming the path if not."""
    path = npz_path(path)
    if path.is_dir():
        raise OSError(f"cannot write the checkpoint {path}: it is a directory")
    fd, tmp = _temporary(path)
    os.close(fd)
    os.unlink(tmp)
    return path


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside path: (fd, name); OSError naming path if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(f"cannot write the checkpoint {path}: {e.strerror or e}") from None
    return fd, tmp


def _write_atomically(path: Path, arrays: dict) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over path."""
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_arrays(path: Path) -> dict:
    """Every array in the .npz at path, or a ValueError; never unpickles anything."""
    with open(path, "rb") as f:
        if f.read(4) not in ZIP_MAGIC:
            raise ValueError(f"{path} is not a readable minicount checkpoint (not an .npz file)")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # f: closed on errors
            return {k: z[k] for k in z.files}
    except Exception as e:  # a damaged zip fails in many ways: BadZipFile, CRC, zlib, header...
        raise ValueError(
            f"{path} is not a readable minicount checkpoint ({type(e).__name__}: {e})"
        ) from None


def _text(arrays: dict, key: str, path: Path) -> str:
    a = arrays.get(key)
    if a is None or a.ndim != 0 or a.dtype.kind != "U":
        raise ValueError(f"{path}: damaged metadata ({key!r} missing or not text)")
    return str(a)


def _json_dict(arrays: dict, key: str, path: Path) -> dict:
    try:
        d = json.loads(_text(arrays, key, path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: damaged metadata ({key!r}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: damaged metadata ({key!r} is not a JSON object)")
    return d


def _opt_state(arrays: dict, params: dict, path: Path) -> dict | None:
    """The AdamW state, checked against params: {'step', 'm.<name>', 'v.<name>'}, or None."""
    if "meta:opt_step" not in arrays:
        return None
    step = arrays["meta:opt_step"]
    if step.ndim != 0 or step.dtype.kind not in "iu" or int(step) < 0:
        raise ValueError(f"{path}: damaged optimiser step")
    state = {k[len("opt:") :]: v for k, v in arrays.items() if k.startswith("opt:")}
    expected = {f"{m}.{k}": p.shape for k, p in params.items() for m in ("m", "v")}
    if set(state) != set(expected):
        raise ValueError(
            f"{path}: optimiser state {sorted(set(state) ^ set(expected))} "
            "does not match the parameters"
        )
    for k, shape in expected.items():
        if state[k].shape != shape or state[k].dtype.kind != "f":
            raise ValueError(
                f"{path}: optimiser state {k} has {state[k].dtype} {state[k].shape}, "
                f"expected floating {shape}"
            )
    return {"step": int(step), **{k: state[k] for k in expected}}


def load_checkpoint(path) -> dict:
    """Everything in a checkpoint: {'params', 'config', 'opt_state' (or None), 'info'}.

    Arrays come back as NumPy arrays whatever device wrote them (move them with
    ``backend.to_device``). Raises ValueError with the reason for a missing, truncated,
    corrupted or foreign file; nothing in the file is ever executed (no pickle).
    """
    path = Path(path)
    if not path.is_file() and npz_path(path).is_file():
        path = npz_path(path)  # as save wrote it
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    arrays = _read_arrays(path)
    if "meta:format" not in arrays or _text(arrays, "meta:format", path) != FORMAT:
        raise ValueError(f"{path} is not a minicount checkpoint (no '{FORMAT}' marker)")
    try:
        config = ModelConfig.from_dict(_json_dict(arrays, "meta:config", path))
    except TypeError as e:
        raise ValueError(f"{path}: damaged metadata ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: damaged model config ({e})") from None
    info = _json_dict(arrays, "meta:info", path) if "meta:info" in arrays else {}
    params = {k[len("param:") :]: v for k, v in arrays.items() if k.startswith("param:")}
    try:
        check_params(params, config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    params = {k: params[k] for k in param_shapes(config)}
    return {
        "params": params,
        "config": config,
        "opt_state": _opt_state(arrays, params, path),
        "info": info,
    }


def load(path) -> tuple[dict, ModelConfig]:
    """(params, config) from a checkpoint; params are NumPy arrays (move them with to_device)."""
    ck = load_checkpoint(path)
    return ck["params"], ck["config"]
