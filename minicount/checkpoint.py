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
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .model import ModelConfig, param_shapes

FORMAT = "minicount-checkpoint-v1"


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def save(path, params: dict, config: ModelConfig, *, opt_state: dict | None = None,
         info: dict | None = None) -> Path:
    """Write a checkpoint atomically; parameters on any device are copied to the host first."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
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
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path) -> dict:
    """Everything in a checkpoint: {'params', 'config', 'opt_state' (or None), 'info'}.

    Raises ValueError with the reason for a missing, truncated, corrupted or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a readable minicount checkpoint ({type(e).__name__}: {e})") from None
    if arrays.get("meta:format") is None or str(arrays["meta:format"]) != FORMAT:
        raise ValueError(f"{path} is not a minicount checkpoint (no '{FORMAT}' marker)")
    try:
        config = ModelConfig.from_dict(json.loads(str(arrays["meta:config"])))
        info = json.loads(str(arrays["meta:info"])) if "meta:info" in arrays else {}
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: damaged metadata ({e})") from None
    params = {k[len("param:"):]: v for k, v in arrays.items() if k.startswith("param:")}
    expected = param_shapes(config)
    if set(params) != set(expected):
        raise ValueError(f"{path}: parameters {sorted(set(params) ^ set(expected))} do not match the config")
    for k, shape in expected.items():
        if params[k].shape[-len(shape):] != shape or params[k].ndim not in (len(shape), len(shape) + 1):
            raise ValueError(f"{path}: {k} has shape {params[k].shape}, config needs {shape}")
        if not np.issubdtype(params[k].dtype, np.floating):
            raise ValueError(f"{path}: {k} has dtype {params[k].dtype}, expected floating point")
    params = {k: params[k] for k in expected}
    opt_state = None
    if "meta:opt_step" in arrays:
        opt_state = {"step": int(arrays["meta:opt_step"])}
        opt_state.update({k[len("opt:"):]: v for k, v in arrays.items() if k.startswith("opt:")})
    return {"params": params, "config": config, "opt_state": opt_state, "info": info}


def load(path) -> tuple[dict, ModelConfig]:
    """(params, config) from a checkpoint; params are NumPy arrays (move them with to_device)."""
    ck = load_checkpoint(path)
    return ck["params"], ck["config"]
