"""The training loop: sample a batch, forward, backward, AdamW; evaluate now and then.

One loop trains one model or an ensemble of M models at once (``seed`` a list of M
seeds). Member i of an ensemble sees exactly the batches and starts from exactly the
weights that a single run with seed i would, so it ends at the same parameters up to
floating-point rounding.

Robustness. Everything a run carries from step to step (parameters, AdamW moments and
step, the data generators' states, the history) is a ``RunState``, and a checkpoint holds
all of it, so ``resume=`` continues a killed run exactly where it stopped: on NumPy the
result is bit-identical to a run that was never interrupted. A NaN or infinite loss,
gradient or parameter stops training with a ``NonFiniteError`` naming the step and the
parameter; a checkpoint is never written over with non-finite parameters.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np

from . import limits
from .backend import DEVICES, array_module, get_xp, resolve_device, to_device, to_numpy
from .checkpoint import check_writable, load_checkpoint, npz_path, save
from .checks import check_bool, check_choice, check_int, check_number, check_probs, check_seeds
from .data import DataConfig, eval_set, sample_batches
from .fast.train_step import keep_freed_memory, loss_and_grads_sliced
from .metrics import evaluate
from .model import ATTENTION, ModelConfig, init_ensemble, init_params, loss_and_grads_all
from .optim import SCHEDULES, AdamW, clip_grads, lr_at
from .progress import Progress
from .record import versions
from .safeio import exclusive_lock, remove_stale_temporaries, resolve_target


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, SIGTERM, SIGHUP); ``checkpoint`` is this run's own
    last checkpoint (a path), or None if it wrote none."""

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint


class NonFiniteError(ValueError):
    """A NaN or infinite loss, gradient or parameter stopped training.

    ``step`` is the step (1-based) at which it was found, ``names`` the parameters
    involved, ``checkpoint`` the last good checkpoint written (None if there is none).
    """

    def __init__(self, message: str, *, step: int, names: list, checkpoint=None):
        super().__init__(message)
        self.step, self.names, self.checkpoint = step, names, checkpoint


DTYPES = ("float32", "float64")  # TrainConfig.dtype: of parameters and activations


class _DataField:
    """TrainConfig.max_len, .bos, .probs, .n_eval: that field of the run's DataConfig (on the
    class, DataConfig's default); read-only (``replace(tc, max_len=...)`` makes another)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return getattr(DataConfig if obj is None else obj.data, self.name)

    def __set__(self, obj, value):
        raise AttributeError(f"TrainConfig.{self.name} is its DataConfig's: use replace()")


# the DataConfig fields a TrainConfig takes by name, TrainConfig(max_len=..., bos=...), and
# writes flat in to_dict (as every checkpoint holds them); eval_seed only when not the default
DATA_FIELDS = ("max_len", "bos", "probs", "n_eval")
_UNSET = object()


@dataclass
class TrainConfig:
    """Everything about a run that is not the architecture: the optimiser and its schedule,
    the seeds, where and how to compute, and the data (``data``, a DataConfig; its fields
    max_len, bos, probs and n_eval are also keywords of TrainConfig and read-only attributes)."""

    steps: int = 1000  # optimiser steps
    batch_size: int = 256  # strings per step (per model)
    lr: float = AdamW.lr  # AdamW learning rate
    weight_decay: float = AdamW.weight_decay  # decoupled weight decay
    beta1: float = AdamW.beta1
    beta2: float = AdamW.beta2
    warmup: int = 0  # steps of linear warm-up
    schedule: str = "constant"  # 'constant' or 'cosine' (decays to 10% of lr)
    # the step the schedule is shaped for (0 = steps): a run trained in segments, snapshot
    # by snapshot, keeps one cosine over its whole length by naming that length here
    schedule_steps: int = 0
    grad_clip: float = 0.0  # clip each model's global gradient norm (0 = off)
    seeds: tuple = (0,)  # one seed per model; more than one trains an ensemble
    # the training strings and the held-out set (max_len, bos, probs, n_eval, eval_seed)
    data: DataConfig = field(default_factory=DataConfig)
    eval_every: int = 100  # evaluate on held-out strings every N steps (0 = only at the end)
    device: str = "cpu"  # 'cpu', 'gpu' or 'auto'
    dtype: str = "float32"  # 'float32' or 'float64'
    ensemble: bool = False  # keep a model axis even with one seed
    checkpoint_every: int = 0  # also checkpoint every N steps (0 = at evaluations and the end)
    # None: model i draws its own batches from seed i. A number: every model of the ensemble
    # sees the same batches, drawn from this seed (one batch per step instead of M; the
    # models still differ in their initial weights; member i = a single run with seed i
    # and the same data_seed)
    data_seed: int | None = None
    # how each step is computed; every path gives the same numbers up to rounding:
    # 'textbook' (model.loss_and_grads_all with layers/attention.py, the whole batch at once),
    # 'fast' (fast/train_step.py with fast/attention.py) or 'fused' (as 'fast', with
    # attention's core in one CUDA kernel on the GPU; on the CPU it is 'fast')
    path: str = "fast"

    max_len = _DataField()
    bos = _DataField()
    probs = _DataField()
    n_eval = _DataField()

    def __post_init__(self):
        self.seeds = check_seeds(self.seeds)
        if not isinstance(self.data, DataConfig):
            raise ValueError(f"data must be a DataConfig, got {type(self.data).__name__}")
        self.data = replace(
            self.data,
            probs=tuple(check_probs(self.data.probs).tolist()),
            max_len=check_int("max_len", self.data.max_len, 1),
            n_eval=check_int("n_eval", self.data.n_eval, 1),
        )
        if self.data_seed is not None:
            self.data_seed = check_int("data_seed", self.data_seed, 0)
        for name, minimum in (("steps", 0), ("batch_size", 1), ("warmup", 0),
                              ("eval_every", 0), ("checkpoint_every", 0),
                              ("schedule_steps", 0)):  # fmt: skip
            setattr(self, name, check_int(name, getattr(self, name), minimum))
        self.lr = check_number("lr", self.lr, low=0.0, low_open=True)
        for name in ("weight_decay", "grad_clip"):
            setattr(self, name, check_number(name, getattr(self, name), low=0.0))
        for name in ("beta1", "beta2"):
            beta = check_number(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
            setattr(self, name, beta)
        check_bool("ensemble", self.ensemble)
        for name, choices in (("schedule", SCHEDULES), ("dtype", DTYPES), ("path", ATTENTION),
                              ("device", DEVICES)):  # fmt: skip
            check_choice(name, getattr(self, name), choices)

    @property
    def horizon(self) -> int:
        """The step the learning-rate schedule is shaped for."""
        return self.schedule_steps or self.steps

    @property
    def is_ensemble(self) -> bool:
        return self.ensemble or len(self.seeds) > 1

    @property
    def data_seeds(self) -> tuple:
        """The seeds of the data generators: one per model, or the one shared data_seed."""
        return self.seeds if self.data_seed is None else (self.data_seed,)

    def to_dict(self) -> dict:
        """Flat, as every checkpoint holds it: the data's fields in the places they had
        before TrainConfig held a DataConfig (eval_seed only when not the default)."""
        d = {}
        for name, value in asdict(self).items():
            if name == "data":
                d.update(max_len=self.max_len, bos=self.bos, probs=list(self.probs))
                if self.data.eval_seed != DataConfig.eval_seed:
                    d["eval_seed"] = self.data.eval_seed
            else:
                d[name] = value
            if name == "eval_every":
                d["n_eval"] = self.n_eval
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"expected a dict of TrainConfig fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} - {"data"}
        data = {k: d[k] for k in (*DATA_FIELDS, "eval_seed") if k in d}
        return cls(**{k: v for k, v in d.items() if k in known}, **data)


def _init_taking_data_fields(init):
    """TrainConfig(max_len=..., bos=..., probs=..., n_eval=..., eval_seed=...): those
    keywords replace the fields of ``data`` (DataConfig() when not given)."""

    def __init__(self, *args, max_len=_UNSET, bos=_UNSET, probs=_UNSET, n_eval=_UNSET,
                 eval_seed=_UNSET, **kw):  # fmt: skip
        given = {k: v for k, v in (("max_len", max_len), ("bos", bos), ("probs", probs),
                 ("n_eval", n_eval), ("eval_seed", eval_seed)) if v is not _UNSET}  # fmt: skip
        if given:
            data = kw.get("data", DataConfig())
            if not isinstance(data, DataConfig):
                raise ValueError(f"data must be a DataConfig, got {type(data).__name__}")
            kw["data"] = _data_with(data, given)
        init(self, *args, **kw)

    __init__.__doc__ = init.__doc__
    return __init__


def _data_with(data: DataConfig, given: dict) -> DataConfig:
    """data with the given fields, probs made a tuple (checked in full by TrainConfig)."""
    if "probs" in given:
        given = {**given, "probs": tuple(check_probs(given["probs"]).tolist())}
    return replace(data, **given)


TrainConfig.__init__ = _init_taking_data_fields(TrainConfig.__init__)


def data_rng(seed: int) -> np.random.Generator:
    """The stream of training batches for one seed (separate from the initialisation stream)."""
    return np.random.default_rng([int(seed), 1])


@dataclass
class RunState:
    """Everything a run carries from one step to the next; a checkpoint stores all of it.

    params and opt_state live on the training device; rngs are the host generators of the
    training batches (one per seed); step counts the optimiser steps taken.
    """

    params: dict
    opt_state: dict
    rngs: list
    history: dict = field(default_factory=lambda: {"step": [], "loss": [], "eval": []})
    step: int = 0


def fresh_run(config: ModelConfig, tc: TrainConfig, opt: AdamW, device: str) -> RunState:
    """Step 0: initial parameters from the seeds, zero moments, fresh data generators."""
    xp, dtype = get_xp(device), np.dtype(tc.dtype)
    if tc.is_ensemble:
        params = init_ensemble(config, tc.seeds, xp, dtype)
    else:
        params = init_params(config, tc.seeds[0], xp, dtype)
    return RunState(params, opt.init_state(params), [data_rng(s) for s in tc.data_seeds])


def checkpoint_info(tc: TrainConfig, run: RunState, device: str) -> dict:
    """The JSON side of a checkpoint: settings, step, generator states, history, versions."""
    return {
        "train": tc.to_dict(),
        "step": run.step,
        "seeds": list(tc.seeds),
        "versions": versions(device),
        "rng_states": [r.bit_generator.state for r in run.rngs],
        "history": run.history,
    }


def _restore_rng(seed: int, state) -> np.random.Generator:
    rng = data_rng(seed)
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"damaged data-generator state ({e})") from None
    return rng


class SavedRun(NamedTuple):
    """A run to resume, read once: its checkpoint's path, what it holds (``load_checkpoint``:
    params, config, opt_state, info) and the TrainConfig it was trained with."""

    path: str
    ck: dict
    tc: TrainConfig


def saved_run(path) -> SavedRun:
    """The checkpoint at path, read once, with the TrainConfig it was trained with;
    ValueError if it holds no training state to resume from. The one reader of a run to
    resume: ``train --resume`` and a sweep's cell read it here and hand the SavedRun to
    ``resume=``, which reads no file again (given a path, ``resume_run`` reads it here)."""
    ck = load_checkpoint(path)
    info = ck["info"]
    keys = ("train", "step", "rng_states", "history")
    if ck["opt_state"] is None or any(k not in info for k in keys):
        raise ValueError(
            f"{path} holds no training state to resume from (it was not written by "
            "train with a checkpoint path)"
        )
    try:
        return SavedRun(str(path), ck, TrainConfig.from_dict(info["train"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: damaged training settings ({e})") from None


# parameters of the steps both runs take (``steps`` only without a cosine schedule)
RESUMABLE_FIELDS = ("steps", "device", "eval_every", "checkpoint_every", "path", "schedule_steps")


def _fields_that_differ(a: dict, b: dict, skip=()) -> list[str]:
    return [
        f"{k}={a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in skip and a.get(k) != b.get(k)
    ]


def check_same_run(path, ck: dict, saved, config, tc):
    """Refuse to resume the run ck (saved with the settings ``saved``) as config and tc unless
    it is the same run: the same model, and only RESUMABLE_FIELDS changed (``steps`` not
    under a cosine schedule, whose shape it sets)."""
    if ck["config"] != config:
        diff = _fields_that_differ(ck["config"].to_dict(), config.to_dict())
        raise ValueError(f"{path} is a run of another model ({', '.join(diff)}; checkpoint vs now)")
    diff = _fields_that_differ(saved.to_dict(), tc.to_dict(), skip=RESUMABLE_FIELDS)
    if tc.schedule == "cosine" and tc.horizon != saved.horizon:
        diff.append(f"horizon {saved.horizon} vs {tc.horizon}, which reshapes the cosine schedule")
    if diff:
        raise ValueError(
            f"{path} was trained with other settings ({', '.join(diff)}; checkpoint "
            f"vs now); only {', '.join(RESUMABLE_FIELDS)} may change on resume"
        )


def check_intact(path, ck: dict, tc) -> None:
    """Refuse a checkpoint whose step, history, generator states or parameters disagree."""
    info, step, history = ck["info"], ck["info"]["step"], ck["info"]["history"]
    if (
        not isinstance(step, int)
        or step != ck["opt_state"]["step"]
        or not isinstance(history, dict)
        or len(history.get("loss", ())) != step
        or len(history.get("step", ())) != step
    ):
        raise ValueError(f"{path}: step, optimiser step and history do not agree")
    if step > tc.steps:
        raise ValueError(f"{path} is at step {step}, beyond steps={tc.steps}: ask for more steps")
    if not isinstance(info["rng_states"], list) or len(info["rng_states"]) != len(tc.data_seeds):
        raise ValueError(f"{path}: expected {len(tc.data_seeds)} data-generator states")
    bad = [
        k
        for k, v in ck["params"].items()
        if v.dtype != np.dtype(tc.dtype) or not np.isfinite(v).all()
    ]
    if bad:
        raise ValueError(f"{path}: parameters {bad} are not finite {tc.dtype}; cannot resume")


def resume_run(resume, config: ModelConfig, tc: TrainConfig, device: str) -> RunState:
    """The RunState saved in ``resume`` (a SavedRun, or a checkpoint path to read), on
    device, after checking that it is a run of this config and tc (``check_same_run``) and
    that it is intact."""
    path, ck, saved = resume if isinstance(resume, SavedRun) else saved_run(resume)
    check_same_run(path, ck, saved, config, tc)
    check_intact(path, ck, tc)
    info, opt_state = ck["info"], ck["opt_state"]
    step, history = info["step"], info["history"]
    rngs = [_restore_rng(s, st) for s, st in zip(tc.data_seeds, info["rng_states"], strict=True)]
    history.setdefault("eval", [])
    moments = to_device({k: v for k, v in opt_state.items() if k != "step"}, device)
    return RunState(to_device(ck["params"], device), {"step": step, **moments}, rngs, history, step)


def _all_finite(arrays) -> bool:
    """True when no array holds a NaN or an infinity (one device sync for all of them)."""
    arrays = list(arrays)
    xp = array_module(*arrays)
    return bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


def _non_finite(a, ensemble: bool) -> str:
    """'nan', 'inf' or '' for an array, naming the ensemble members involved ([M, ...])."""
    a = np.asarray(to_numpy(a))
    kind = "nan" if np.isnan(a).any() else "inf" if np.isinf(a).any() else ""
    if kind and ensemble:
        members = np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1))
        kind += f" in model(s) {members.tolist()}"
    return kind


def _kind(name: str) -> str:
    """'AdamW moment' for an optimiser state key (m.<name>, v.<name>), else 'parameter'."""
    return "AdamW moment" if name.startswith(("m.", "v.")) else "parameter"


def non_finite_error(
    step: int, loss, grads: dict, params: dict, ensemble: bool, checkpoint=None
) -> NonFiniteError:
    """Say what went non-finite at this step and where: parameters first (the cause); with
    finite parameters and a non-finite loss, the forward pass overflowed; else the gradients.
    loss is a host array (None when only the parameters were checked); checkpoint is the
    last good one as (path, step), or None."""
    params = to_numpy(params)
    bad_params = {k: _non_finite(v, ensemble) for k, v in params.items()}
    bad_params = {k: v for k, v in bad_params.items() if v}
    bad_grads = {k: _non_finite(g, ensemble) for k, g in grads.items()}
    bad_grads = {k: v for k, v in bad_grads.items() if v}
    loss_ok = loss is None or bool(np.isfinite(loss).all())
    if bad_params:
        names = list(bad_params)
        what = "; ".join(f"{_kind(k)} {k} is {v}" for k, v in bad_params.items())
    elif not loss_ok:
        biggest = max(params, key=lambda k: float(np.abs(params[k]).max()))
        names = [biggest]
        what = (
            f"all parameters are finite, so the forward pass overflowed (largest "
            f"|parameter| {float(np.abs(params[biggest]).max()):.3g}, in {biggest})"
        )
    else:
        names = list(bad_grads)
        what = "; ".join(f"gradient of {k} is {v}" for k, v in bad_grads.items())
    if loss is not None:
        loss = np.asarray(loss)
        what = f"loss {np.array2string(loss, precision=4) if loss.ndim else f'{loss:.4g}'}; {what}"
    where = "no checkpoint was written"
    if checkpoint:
        where = f"the last good checkpoint is {checkpoint[0]} (step {checkpoint[1]})"
    return NonFiniteError(
        f"non-finite training at step {step}: {what}. Stopped; {where}; "
        "try a smaller lr, warmup or grad_clip",
        step=step,
        names=names,
        checkpoint=checkpoint and checkpoint[0],
    )


def check_step(step: int, loss, grads: dict, params: dict, ensemble: bool, checkpoint=None):
    """Raise NonFiniteError if this step's loss (host array) or a gradient is not finite."""
    if not (np.isfinite(loss).all() and _all_finite(grads.values())):
        raise non_finite_error(step, loss, grads, params, ensemble, checkpoint)


def save_run(path, run: RunState, config: ModelConfig, tc: TrainConfig, device: str, last=None):
    """Checkpoint the run; refuses (NonFiniteError) to write non-finite parameters or AdamW
    moments over a good checkpoint. ``last`` is the previous checkpoint, named in the error. Returns
    (path, step), the new last good checkpoint."""
    arrays = {**run.params, **{k: v for k, v in run.opt_state.items() if k != "step"}}
    if not _all_finite(arrays.values()):
        raise non_finite_error(run.step, None, {}, arrays, tc.is_ensemble, last)
    path = save(
        path, run.params, config, opt_state=run.opt_state, info=checkpoint_info(tc, run, device)
    )
    return path, run.step


def _summary(metrics: dict, key: str) -> str:
    v = np.asarray(metrics[key])
    if v.ndim == 0:
        return f"{float(v):.4f}"
    return f"mean {v.mean():.4f} min {v.min():.4f}"  # over the members of the ensemble


def step_loss_and_grads(params, tokens, targets, mask, config: ModelConfig, path: str):
    """A step's losses ([] or [M]) and gradients, computed the way ``path`` names."""
    if path == "textbook":
        return loss_and_grads_all(params, tokens, targets, mask, config, attention="textbook")
    return loss_and_grads_sliced(params, tokens, targets, mask, config, attention=path)


def train_step(run: RunState, opt: AdamW, config: ModelConfig, tc: TrainConfig, device, last):
    """One optimiser step of run, in place: sample, forward, backward, check, clip, update.
    ``last`` is the last good checkpoint, named if the step is not finite."""
    step, ensemble = run.step, tc.is_ensemble
    tokens, targets, mask = sample_batches(
        tc.batch_size, tc.max_len, run.rngs, bos=tc.bos, probs=tc.probs
    )
    if not ensemble or tc.data_seed is not None:  # one batch: [B, T], shared by all models
        tokens, targets, mask = tokens[0], targets[0], mask[0]
    targets = targets.astype(np.dtype(tc.dtype))
    tokens, targets, mask = to_device((tokens, targets, mask), device)
    loss, grads = step_loss_and_grads(run.params, tokens, targets, mask, config, tc.path)
    loss = to_numpy(loss)
    check_step(step + 1, loss, grads, run.params, ensemble, last)
    if tc.grad_clip:
        clip_grads(grads, tc.grad_clip, ensemble)
    lr = lr_at(step, lr=tc.lr, total_steps=tc.horizon, warmup=tc.warmup, schedule=tc.schedule)
    opt.step(run.params, grads, run.opt_state, lr=lr)
    run.step = step + 1
    run.history["step"].append(step + 1)
    run.history["loss"].append(loss.tolist())


def train(
    config: ModelConfig,
    *,
    seed=TrainConfig.seeds,
    progress=False,
    checkpoint: str | None = None,
    callback=None,
    resume=None,
    **options,
):
    """Train a model (or, with a list of seeds, an ensemble) on Count01.

    ``seed`` is one seed or a list of them (TrainConfig.seeds); the further keyword options
    are the other fields of TrainConfig, with its defaults (steps, batch_size, max_len, lr,
    device, weight_decay, warmup, schedule, grad_clip, bos, probs, eval_every, n_eval, dtype,
    checkpoint_every, data_seed, path, ...).
    ``progress=True`` shows a bar (a terminal) or periodic lines (a log) on stderr, with a line
    at each evaluation; a Progress object is advanced step by step instead (a sweep's overall
    count). ``checkpoint`` is a path to save to
    at each evaluation, every ``checkpoint_every`` steps and at the end;
    ``callback(step, params, history)`` is called after each evaluation. ``resume`` is a
    checkpoint of this run to continue from, a path or a SavedRun already read (only steps,
    device, eval_every, checkpoint_every and path may differ); on NumPy the result equals an
    uninterrupted run's.

    Returns (params, history): params as NumPy arrays (with a leading model axis for an
    ensemble) and history, a dict with 'step', 'loss' per step and 'eval', a list of
    {'step', 'time', metrics...} entries. Raises NonFiniteError (a ValueError) if the loss,
    a gradient or a parameter becomes NaN or infinite.
    """
    seeds = tuple(seed) if isinstance(seed, (list, tuple, np.ndarray)) else (seed,)
    tc = TrainConfig(seeds=seeds, **options)
    return train_with_config(
        config, tc, progress=progress, checkpoint=checkpoint, callback=callback, resume=resume
    )


def check_fits(config: ModelConfig, tc: TrainConfig) -> None:
    """Refuse a model whose context cannot hold the training strings of tc."""
    if config.pos_emb and config.n_ctx < tc.max_len + int(tc.bos):
        raise ValueError(
            f"n_ctx={config.n_ctx} is too small for max_len={tc.max_len} "
            f"(needs at least {tc.max_len + int(tc.bos)})"
        )


def check_training_memory(config: ModelConfig, tc: TrainConfig, device: str) -> None:
    """Refuse (one-line ValueError naming the limit) a run that does not fit on device by
    the one memory rule, ``limits.fits``."""
    shape = (config, len(tc.seeds), tc.batch_size, tc.max_len + int(tc.bos))
    itemsize = np.dtype(tc.dtype).itemsize
    if limits.fits(*shape, device, n_eval=tc.n_eval, itemsize=itemsize):
        return
    need = limits.training_bytes(*shape, tc.n_eval, itemsize)
    where = "the GPU's memory" if device == "gpu" else "physical memory, or MINICOUNT_MAX_MEMORY"
    raise ValueError(
        f"training {len(tc.seeds)} model(s) on batches of {tc.batch_size} needs about "
        f"{need / 2**30:.3g} GiB of memory, over the limit of "
        f"{limits.memory_limit(device) / 2**30:.3g} GiB ({where})"
    )


def train_with_config(
    config: ModelConfig,
    tc: TrainConfig,
    *,
    progress=False,
    checkpoint=None,
    callback=None,
    resume=None,
):
    """The loop behind ``train``, driven by a TrainConfig. While it runs it holds a lock on
    the checkpoint, so that a second run writing the same file fails at once (OutputLocked);
    Ctrl-C (or SIGTERM, SIGHUP on the command line) raises Interrupted."""
    if not isinstance(config, ModelConfig) or not isinstance(tc, TrainConfig):
        raise ValueError("train_with_config needs a ModelConfig and a TrainConfig")
    check_fits(config, tc)
    device = resolve_device(tc.device)
    check_training_memory(config, tc, device)
    return run_checked(config, tc, device, progress, checkpoint, callback, resume)


def run_checked(config, tc, device, progress=False, checkpoint=None, callback=None, resume=None):
    """``train_with_config`` after its checks, for a caller that made them once for many runs
    (a sweep checks every cell's memory before the first): device is resolved already."""
    if device == "cpu":
        keep_freed_memory()  # process-wide: glibc keeps freed blocks (see fast/train_step.py)
    args = (config, tc, device, progress, checkpoint, callback, resume)
    if not checkpoint:
        return _train_loop(*args)
    path = check_writable(checkpoint)  # now, not after hours of training
    with exclusive_lock(resolve_target(path), what="checkpoint"):
        remove_stale_temporaries(path)  # of killed saves: a live writer would hold the lock
        return _train_loop(*args)


def _file_identity(checkpoint):
    """(inode, mtime) of the checkpoint file, or None: every save makes a new file."""
    if not checkpoint:
        return None
    try:
        st = os.stat(npz_path(checkpoint))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _train_loop(config, tc, device, progress, checkpoint, callback, resume):
    """train_with_config once its checks are done. One function on purpose: the loop's
    phases (evaluate, save, call back, finish) share the run's state, so they are inner
    functions read together with the loop that calls them."""
    ensemble = tc.is_ensemble
    opt = AdamW(lr=tc.lr, beta1=tc.beta1, beta2=tc.beta2, weight_decay=tc.weight_decay)
    run = resume_run(resume, config, tc, device) if resume else fresh_run(config, tc, opt, device)
    params, history = run.params, run.history
    resumed_from = resume.path if isinstance(resume, SavedRun) else resume
    last_saved = (resumed_from, run.step) if resume else None  # named if training has to stop
    before = _file_identity(checkpoint)  # an older run's file, not to be named as this run's
    eval_tokens, eval_targets, eval_mask = eval_set(tc.data)
    bar, own_bar = _progress_bar(progress, tc, run.step)
    log = bar.line if own_bar else (lambda msg: None)
    log(
        f"training {len(tc.seeds)} model(s) {config} for {tc.steps} steps on {device}"
        + (f", resuming at step {run.step}" if resume else "")
    )
    t0 = time.perf_counter() - (history["eval"][-1]["time"] if history["eval"] else 0.0)

    def run_eval(step):
        m = evaluate(params, eval_tokens, eval_targets, eval_mask, config, attention=tc.path)
        entry = {"step": step, "time": time.perf_counter() - t0}
        entry.update({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()})
        history["eval"].append(entry)
        log(
            f"step {step:>6}/{tc.steps}  loss {_summary(m, 'loss')}  l-acc {_summary(m, 'l_acc')}  "
            f"s-acc {_summary(m, 's_acc')}  auc {_summary(m, 'roc_auc')}  ({entry['time']:.1f}s)"
        )

    def run_save():
        nonlocal last_saved
        if checkpoint:
            last_saved = save_run(checkpoint, run, config, tc, device, last_saved)

    def between_steps(step):
        """After a step short of the last: evaluate, checkpoint, call back, as asked."""
        evaluating = tc.eval_every and step % tc.eval_every == 0
        if evaluating:
            run_eval(step)
        if evaluating or (tc.checkpoint_every and step % tc.checkpoint_every == 0):
            run_save()
        if evaluating and callback is not None:
            callback(step, params, history)

    def finish():
        """After the last step: evaluate and checkpoint, unless that step already did."""
        if history["eval"] and history["eval"][-1]["step"] == tc.steps:
            return
        if not _all_finite(params.values()):
            raise non_finite_error(run.step, None, {}, params, ensemble, last_saved)
        run_eval(tc.steps)
        run_save()
        if callback is not None:
            callback(tc.steps, params, history)

    try:
        while run.step < tc.steps:
            train_step(run, opt, config, tc, device, last_saved)
            bar.advance(1)
            if run.step < tc.steps:
                between_steps(run.step)
        finish()
    except KeyboardInterrupt:  # only this run's own checkpoint is worth resuming from
        own = last_saved[0] if last_saved else None
        if checkpoint and _file_identity(checkpoint) not in (None, before):
            own = npz_path(checkpoint)  # replaced by a save the interrupt cut short
        raise Interrupted(own) from None
    finally:
        if own_bar:
            bar.close()
    return to_numpy(params), history


def _progress_bar(progress, tc: TrainConfig, step: int) -> tuple[Progress, bool]:
    """(the Progress that counts the steps, whether this run owns it). ``progress`` is a
    bool (show a bar of this run's own) or a caller's Progress (a sweep's) to advance."""
    if isinstance(progress, Progress):
        return progress, False
    return Progress(tc.steps, unit="step", done=step, desc="train", enabled=bool(progress)), True
