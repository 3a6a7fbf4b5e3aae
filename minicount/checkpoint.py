"""Checkpoints as plain .npz files: no pickle, so loading one never executes anything.

Layout (every entry a NumPy array, stored uncompressed):
    meta:format        "minicount-checkpoint-v1"
    meta:config        the ModelConfig as JSON
    meta:info          JSON: training settings, step, RNG states, versions (optional)
    param:<name>       each parameter under its TransformerLens-style name,
                       e.g. param:blocks.0.attn.W_Q
    opt:<name>         optimiser moments, e.g. opt:m.embed.W_E (optional)
    meta:opt_step      the optimiser step (with the moments)

Files are written atomically (safeio.atomic_write), so a run killed while saving leaves the
previous checkpoint intact. Loading reads a hostile file in bounded time and memory: only
the members above are opened, the config is checked against the size limits (limits.py)
before anything is built, and each array's .npy header (dtype, shape) and stored size are
compared with the config before its data is read.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from . import limits
from .backend import to_numpy
from .inputs import check_params
from .model import ModelConfig
from .names import param_shapes
from .safeio import atomic_write, resolve_target

FORMAT = "minicount-checkpoint-v1"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip
MAX_HEADER = 10_000  # bytes of a .npy header (NumPy's own default limit)
MAX_TEXT = {"meta:format": 2**10, "meta:config": 2**16, "meta:info": 2**30}  # bytes stored
MAX_JSON_DEPTH = 32


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def npz_path(path) -> Path:
    """The file a checkpoint path names: the path itself if it ends in .npz, else path + '.npz'."""
    if not str(path):
        raise ValueError("the checkpoint path is empty")
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _non_finite_names(arrays: dict) -> list[str]:
    """The names of the arrays that hold a NaN or an infinity."""
    return [k for k, v in arrays.items() if not np.isfinite(to_numpy(v)).all()]


def save(
    path,
    params: dict,
    config: ModelConfig,
    *,
    opt_state: dict | None = None,
    info: dict | None = None,
) -> Path:
    """Write a checkpoint atomically; parameters on any device are copied to the host first.

    params must match config (``inputs.check_params``) and be finite; opt_state is an AdamW
    state ({'step', 'm.<name>', 'v.<name>'}), also finite; info any JSON-able dict. A path
    without the .npz suffix gets it; a symlink is written through. Returns the path written.
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
    bad = _non_finite_names({k: v for k, v in arrays.items() if k.startswith(("param:", "opt:"))})
    if bad:
        raise ValueError(f"refusing to save {path}: {bad} hold NaN or inf")
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        raise OSError(f"cannot write the checkpoint {path}: {e.strerror or e}") from None
    return path


def check_writable(path) -> Path:
    """Make sure a checkpoint can be written at path (creating its folder) before any work is
    done that would need it; returns the .npz path. OSError naming the path if not: a
    directory, a device or a pipe cannot hold one."""
    given, path = Path(path), npz_path(path)
    try:
        resolve_target(given)  # '/dev/null' or a folder: not 'next to it' as /dev/null.npz
    except OSError as e:
        raise OSError(f"cannot write the checkpoint {given}: {e.strerror or e}") from None
    try:
        target = resolve_target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as e:
        raise OSError(f"cannot write the checkpoint {path}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------- reading, in bounded memory


def _damaged(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} is not a readable minicount checkpoint ({what})")


def _members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by key ('param:embed.W_E'), read from its directory only."""
    members = {}
    for info in zf.infolist():
        key = info.filename[: -len(".npy")]
        if not info.filename.endswith(".npy") or key in members:
            raise _damaged(path, f"unexpected member {info.filename[:80]!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _damaged(path, f"member {key[:80]!r} is compressed; minicount stores them plain")
        members[key] = info
    return members


def _header(f, path: Path, key: str) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) from the .npy header at the start of stream f."""
    version = npy.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(f, max_header_size=MAX_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(f, max_header_size=MAX_HEADER)
    else:
        raise _damaged(path, f"{key}: .npy version {version}")
    if dtype.hasobject or dtype.kind not in "fiuU" or dtype.subdtype is not None:
        raise _damaged(path, f"{key}: dtype {dtype} is not allowed")
    return tuple(shape), fortran, dtype


def _read_member(zf, info, path: Path, key: str, check) -> np.ndarray:
    """One array, its data read only after ``check(shape, dtype)`` accepted its header and
    the stored size matches; zip errors (CRC, truncation) become a ValueError."""
    try:
        with zf.open(info) as f:
            shape, fortran, dtype = _header(f, path, key)
            check(shape, dtype)
            count = math.prod(shape)
            if f.tell() + count * dtype.itemsize != info.file_size:
                raise _damaged(path, f"{key}: stored size does not match its header")
            flat = np.empty(count, dtype)
            view = memoryview(flat.view(np.uint8))
            done = 0
            while done < view.nbytes:
                n = f.readinto(view[done:])
                if not n:
                    raise _damaged(path, f"{key}: truncated")
                done += n
            if f.read(1):  # also makes zipfile check the CRC
                raise _damaged(path, f"{key}: longer than its header says")
    except ValueError:
        raise
    except Exception as e:  # BadZipFile, bad CRC, EOFError, struct.error...
        raise _damaged(path, f"{key}: {type(e).__name__}: {e}") from None
    a = flat.reshape(shape, order="F" if fortran else "C")
    return a if dtype.isnative else a.astype(dtype.newbyteorder("="))


def _text_member(zf, members, key: str, path: Path) -> str:
    info = members.get(key)
    if info is None:
        raise _damaged(path, f"no {key!r}")
    if info.file_size > MAX_TEXT[key] + MAX_HEADER:
        raise _damaged(path, f"{key!r} is {info.file_size} bytes, over {MAX_TEXT[key]}")

    def check(shape, dtype):
        if shape != () or dtype.kind != "U":
            raise ValueError(f"{path}: damaged metadata ({key!r} is not text)")

    return str(_read_member(zf, info, path, key, check))


def _depth(obj) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            children = value.values() if isinstance(value, dict) else value
            if isinstance(value, (dict, list)):
                stack.extend((c, depth + 1) for c in children)
    return deepest


def _json_dict(text: str, key: str, path: Path) -> dict:
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, too deep, int too long
        raise ValueError(f"{path}: damaged metadata ({key!r}: {type(e).__name__})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: damaged metadata ({key!r} is not a JSON object)")
    if _depth(d) > MAX_JSON_DEPTH:
        raise ValueError(f"{path}: damaged metadata ({key!r} nested too deeply)")
    return d


def _config(text: str, path: Path) -> ModelConfig:
    """The ModelConfig, checked against the size limits before anything is built."""
    try:
        return ModelConfig.from_dict(_json_dict(text, "meta:config", path))
    except TypeError as e:
        raise ValueError(f"{path}: damaged metadata ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: damaged model config ({e})") from None


def _expected_keys(config: ModelConfig, with_opt: bool) -> dict[str, tuple]:
    """Array members by key and the shape of one model's array."""
    shapes = param_shapes(config)
    keys = {"param:" + k: s for k, s in shapes.items()}
    if with_opt:
        keys.update({f"opt:{m}.{k}": s for k, s in shapes.items() for m in ("m", "v")})
    return keys


def _read_arrays(zf, members, config: ModelConfig, path: Path) -> dict:
    """Parameters and moments, each header checked against the config (one model's shape,
    or [M, *shape] with one M for all) before its data is read."""
    leading = []

    def checker(key, shape):
        def check(got, dtype):
            lead = got[: len(got) - len(shape)]
            if got[len(lead) :] != shape or len(lead) > 1 or dtype.kind != "f":
                raise ValueError(
                    f"{path}: {key} is {dtype} {got}; the config needs floating {shape} "
                    "(or [M, *shape] for an ensemble)"
                )
            if lead:
                limits.check_ensemble(lead[0])
            if leading and leading[0] != lead:
                raise ValueError(f"{path}: {key} has leading axes {lead}, others {leading[0]}")
            leading.append(lead)

        return check

    expected = _expected_keys(config, "meta:opt_step" in members)
    return {k: _read_member(zf, members[k], path, k, checker(k, s)) for k, s in expected.items()}


def _opt_step(zf, members, path: Path) -> int | None:
    if "meta:opt_step" not in members:
        return None

    def check(shape, dtype):
        if shape != () or dtype.kind not in "iu":
            raise ValueError(f"{path}: damaged optimiser step")

    step = int(_read_member(zf, members["meta:opt_step"], path, "meta:opt_step", check))
    if step < 0:
        raise ValueError(f"{path}: damaged optimiser step")
    return step


def _open(path: Path) -> zipfile.ZipFile:
    with open(path, "rb") as f:
        if f.read(4) not in ZIP_MAGIC:
            raise _damaged(path, "not an .npz file")
    try:
        return zipfile.ZipFile(path)
    except Exception as e:  # BadZipFile, struct.error, OSError...
        raise _damaged(path, f"{type(e).__name__}: {e}") from None


def _read(path: Path) -> dict:
    """The checkpoint's parts, read member by member in the order that bounds the work:
    the directory, the format marker, the config, then the headers and data of the arrays."""
    with _open(path) as zf:
        members = _members(zf, path)
        if "meta:format" not in members or _text_member(zf, members, "meta:format", path) != FORMAT:
            raise ValueError(f"{path} is not a minicount checkpoint (no '{FORMAT}' marker)")
        config = _config(_text_member(zf, members, "meta:config", path), path)
        expected = set(_expected_keys(config, "meta:opt_step" in members))
        expected |= {"meta:format", "meta:config", "meta:info", "meta:opt_step"}
        unknown, missing = sorted(set(members) - expected), sorted(expected - set(members))
        missing = [k for k in missing if not k.startswith("meta:")]
        if unknown or missing:
            what = f"unexpected members {[k[:80] for k in unknown[:5]]}" if unknown else ""
            what += ("; " if unknown and missing else "") + (
                f"missing {missing[:5]}" if missing else ""
            )
            raise ValueError(f"{path}: members do not match the config ({what})")
        info = {}
        if "meta:info" in members:
            info = _json_dict(_text_member(zf, members, "meta:info", path), "meta:info", path)
        arrays = _read_arrays(zf, members, config, path)
        step = _opt_step(zf, members, path)
    return {"config": config, "info": info, "arrays": arrays, "opt_step": step}


# ---------------------------------------------------------------- the info dict

METRICS = ("loss", "l_acc", "s_acc", "roc_auc")


def _is_int(x, minimum: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def _is_number(x) -> bool:
    """A number, a list of numbers (one per ensemble member), or None (JSON for a NaN)."""
    if isinstance(x, list):
        return all(_is_number(v) and not isinstance(v, list) for v in x)
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _history_problem(h) -> str:
    """What is wrong with a training history, or ''."""
    if not isinstance(h, dict) or not all(k in h for k in ("step", "loss", "eval")):
        return "history must be a dict with 'step', 'loss' and 'eval'"
    if not isinstance(h["step"], list) or not all(_is_int(x) for x in h["step"]):
        return "history steps must be whole numbers"
    if not isinstance(h["loss"], list) or not all(_is_number(x) for x in h["loss"]):
        return "history losses must be numbers"
    if not isinstance(h["eval"], list):
        return "history 'eval' must be a list"
    for e in h["eval"]:
        if not isinstance(e, dict) or not all(k in e for k in ("step", "time", *METRICS)):
            return f"evaluation entries need 'step', 'time', {', '.join(METRICS)}"
        if not _is_int(e["step"]) or not all(_is_number(v) for v in e.values() if v != e["step"]):
            return "evaluation entries must hold numbers"
    return ""


def info_problem(info: dict) -> str:
    """What is wrong with the shape of a checkpoint's info dict (each part minicount reads),
    or ''. The training settings are only checked to be a dict here: their values are
    TrainConfig's to judge, where a run is resumed (train.saved_run), and DataConfig's where
    eval and analyze read max_len and bos from them."""
    if "train" in info and not isinstance(info["train"], dict):
        return "training settings must be a dict of TrainConfig fields"
    if "step" in info and not _is_int(info["step"]):
        return "step must be a whole number >= 0"
    if "seeds" in info and not (
        isinstance(info["seeds"], list) and all(_is_int(x) for x in info["seeds"])
    ):
        return "seeds must be whole numbers >= 0"
    if "history" in info and _history_problem(info["history"]):
        return _history_problem(info["history"])
    states = info.get("rng_states", [])
    if not isinstance(states, list) or not all(isinstance(x, dict) for x in states):
        return "rng_states must be a list of generator states"
    versions = info.get("versions", {})
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        return "versions must map names to strings"
    return ""


def load_checkpoint(path) -> dict:
    """Everything in a checkpoint: {'params', 'config', 'opt_state' (or None), 'info'}.

    Arrays come back as NumPy arrays whatever device wrote them (move them with
    ``backend.to_device``). Raises ValueError with the reason for a missing, truncated,
    corrupted, foreign or oversized file, damaged metadata or non-finite numbers; the file
    is read in time and memory bounded by what its config needs, and nothing in it is ever
    executed (no pickle).
    """
    if not str(path):
        raise ValueError("the checkpoint path is empty")
    path = Path(path)
    if not path.is_file() and npz_path(path).is_file():
        path = npz_path(path)  # as save wrote it
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    ck = _read(path)
    config, arrays = ck["config"], ck["arrays"]
    problem = info_problem(ck["info"])
    if problem:
        raise ValueError(f"{path}: damaged metadata ({problem})")
    params = {k[len("param:") :]: arrays[k] for k in _expected_keys(config, False)}
    try:
        check_params(params, config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    bad = _non_finite_names(arrays)
    if bad:
        raise ValueError(f"{path}: {', '.join(bad[:5])} hold NaN or inf; refusing a broken model")
    opt_state = None
    if ck["opt_step"] is not None:
        opt_state = {"step": ck["opt_step"]}
        opt_state.update({k[len("opt:") :]: v for k, v in arrays.items() if k.startswith("opt:")})
    return {"params": params, "config": config, "opt_state": opt_state, "info": ck["info"]}


def load(path) -> tuple[dict, ModelConfig]:
    """(params, config) from a checkpoint; params are NumPy arrays (move them with to_device)."""
    ck = load_checkpoint(path)
    return ck["params"], ck["config"]
