"""The training loop: sample a batch, forward, backward, AdamW; evaluate now and then.

One loop trains one model or an ensemble of M models at once (``seed`` a list of M
seeds). Member i of an ensemble sees exactly the batches and starts from exactly the
weights that a single run with seed i would, so it ends at the same parameters up to
floating-point rounding.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import __version__
from .backend import DEVICES, get_xp, resolve_device, to_device, to_numpy
from .checkpoint import save
from .data import DataConfig, eval_set, sample_batches
from .metrics import evaluate
from .model import ModelConfig, init_ensemble, init_params
from .optim import AdamW, clip_grads, lr_at
from .parallel import loss_and_grads_sliced


@dataclass
class TrainConfig:
    """Everything about a run that is not the architecture."""

    steps: int = 1000  # optimiser steps
    batch_size: int = 256  # strings per step (per model)
    lr: float = 3e-3  # AdamW learning rate
    weight_decay: float = 0.0  # decoupled weight decay
    beta1: float = 0.9
    beta2: float = 0.999
    warmup: int = 0  # steps of linear warm-up
    schedule: str = "constant"  # 'constant' or 'cosine' (decays to 10% of lr)
    grad_clip: float = 0.0  # clip each model's global gradient norm (0 = off)
    seeds: tuple = (0,)  # one seed per model; more than one trains an ensemble
    max_len: int = 32  # strings have 1..max_len symbols
    bos: bool = True  # prepend BOS to every string
    probs: tuple = (1 / 3, 1 / 3, 1 / 3)  # P(0), P(1), P(2)
    eval_every: int = 100  # evaluate on held-out strings every this many steps (0 = only at the end)
    n_eval: int = 2048  # held-out strings
    device: str = "cpu"  # 'cpu', 'gpu' or 'auto'
    dtype: str = "float32"  # 'float32' or 'float64'
    ensemble: bool = False  # keep a model axis even with one seed

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.probs = tuple(float(p) for p in self.probs)
        if self.steps < 0 or self.batch_size < 1 or not self.seeds:
            raise ValueError("need steps >= 0, batch_size >= 1 and at least one seed")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")

    @property
    def data(self) -> DataConfig:
        return DataConfig(max_len=self.max_len, bos=self.bos, probs=self.probs, n_eval=self.n_eval)

    @property
    def is_ensemble(self) -> bool:
        return self.ensemble or len(self.seeds) > 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"], d["probs"] = list(self.seeds), list(self.probs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def data_rng(seed: int) -> np.random.Generator:
    """The stream of training batches for one seed (separate from the initialisation stream)."""
    return np.random.default_rng([int(seed), 1])


def check_fits(config: ModelConfig, tc: TrainConfig) -> None:
    """Refuse a model whose context cannot hold the training (and long evaluation) strings."""
    if config.pos_emb and config.n_ctx < tc.max_len + int(tc.bos):
        raise ValueError(f"n_ctx={config.n_ctx} is too small for max_len={tc.max_len} "
                         f"(needs at least {tc.max_len + int(tc.bos)})")


def versions() -> dict:
    return {"minicount": __version__, "numpy": np.__version__, "python": platform.python_version()}


def _summary(metrics: dict, key: str) -> str:
    v = np.asarray(metrics[key])
    return f"{float(v):.4f}" if v.ndim == 0 else f"{v.mean():.4f} (min {v.min():.4f})"


def train(config: ModelConfig, *, steps: int = 1000, seed=0, batch_size: int = 256,
          max_len: int = 32, lr: float = 3e-3, device: str = "cpu", progress=False,
          checkpoint: str | None = None, callback=None, **options):
    """Train a model (or, with a list of seeds, an ensemble) on Count01.

    Further keyword options are the fields of TrainConfig (weight_decay, warmup, schedule,
    grad_clip, bos, probs, eval_every, n_eval, dtype, ...). ``progress=True`` prints a line
    at each evaluation; ``checkpoint`` is a path to save to at each evaluation and at the
    end; ``callback(step, params, history)`` is called after each evaluation.

    Returns (params, history): params as NumPy arrays (with a leading model axis for an
    ensemble) and history, a dict with 'step', 'loss' per step and 'eval', a list of
    {'step', 'time', metrics...} entries.
    """
    seeds = tuple(seed) if isinstance(seed, (list, tuple, np.ndarray)) else (int(seed),)
    tc = TrainConfig(steps=steps, seeds=seeds, batch_size=batch_size, max_len=max_len, lr=lr,
                     device=device, **options)
    return train_with_config(config, tc, progress=progress, checkpoint=checkpoint, callback=callback)


def train_with_config(config: ModelConfig, tc: TrainConfig, *, progress=False, checkpoint=None,
                      callback=None):
    """The loop behind ``train``, driven by a TrainConfig."""
    check_fits(config, tc)
    device = resolve_device(tc.device)
    xp = get_xp(device)
    dtype = np.dtype(tc.dtype)
    ensemble = tc.is_ensemble
    if ensemble:
        params = init_ensemble(config, tc.seeds, xp, dtype)
    else:
        params = init_params(config, tc.seeds[0], xp, dtype)
    opt = AdamW(lr=tc.lr, beta1=tc.beta1, beta2=tc.beta2, weight_decay=tc.weight_decay)
    state = opt.init_state(params)
    rngs = [data_rng(s) for s in tc.seeds]
    eval_tokens, eval_targets, eval_mask = eval_set(tc.data)
    history = {"step": [], "loss": [], "eval": []}
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    log(f"training {len(tc.seeds)} model(s) {config} for {tc.steps} steps on {device}")
    t0 = time.perf_counter()

    def run_eval(step):
        m = evaluate(params, eval_tokens, eval_targets, eval_mask, config)
        entry = {"step": step, "time": time.perf_counter() - t0}
        entry.update({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()})
        history["eval"].append(entry)
        log(f"step {step:>6}/{tc.steps}  loss {_summary(m, 'loss')}  l-acc {_summary(m, 'l_acc')}  "
            f"s-acc {_summary(m, 's_acc')}  auc {_summary(m, 'roc_auc')}  ({entry['time']:.1f}s)")
        if checkpoint:
            save(checkpoint, params, config, opt_state=state, info={
                "train": tc.to_dict(), "step": step, "versions": versions(),
                "rng_states": [r.bit_generator.state for r in rngs], "history": history})
        if callback is not None:
            callback(step, params, history)

    for step in range(tc.steps):
        tokens, targets, mask = sample_batches(tc.batch_size, tc.max_len, rngs, bos=tc.bos,
                                               probs=tc.probs)
        if not ensemble:
            tokens, targets, mask = tokens[0], targets[0], mask[0]
        tokens, targets, mask = to_device((tokens, targets.astype(dtype), mask), device)
        loss, grads = loss_and_grads_sliced(params, tokens, targets, mask, config)
        if tc.grad_clip:
            clip_grads(grads, tc.grad_clip, ensemble)
        opt.step(params, grads, state, lr=lr_at(step, lr=tc.lr, total_steps=tc.steps,
                                                  warmup=tc.warmup, schedule=tc.schedule))
        history["step"].append(step + 1)
        history["loss"].append(to_numpy(loss).tolist())
        if tc.eval_every and (step + 1) % tc.eval_every == 0 and step + 1 < tc.steps:
            run_eval(step + 1)
    run_eval(tc.steps)
    return to_numpy(params), history


