"""A training step's loss and gradients computed slice by slice, on several CPU threads.

Two things make NumPy slow on a whole batch of the study's model: the [B, H, T, T]
attention arrays (4 MiB each for B = 256) do not fit in a core's cache, so each of the
many passes over them goes to memory; and NumPy runs elementwise work on one core.
So the batch is cut into slices small enough for their attention arrays to stay in
cache, each slice runs forward and backward on its own, and a pool of threads works
through the slices (NumPy releases the GIL inside array operations). Gradients add up
across slices because every slice divides its loss by the whole batch's count of terms.

The result equals ``model.loss_and_grads_all`` up to floating-point rounding (tested).
On CuPy the whole batch is one slice: a GPU wants big arrays.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from . import layers
from .backend import array_module
from .model import ModelConfig, backward, forward_with_cache

# aim for attention arrays [slice, H, T, T] of about this many elements (512 KiB in float32)
SLICE_ELEMENTS = 2**17
MIN_SLICE = 8  # strings; smaller slices cost more in Python overhead than they save

_pools: dict[int, ThreadPoolExecutor] = {}


def default_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slice_size(tokens_shape: tuple, config: ModelConfig) -> int:
    """Strings per slice for tokens [..., B, T]: the attention arrays of a slice fit in cache."""
    *lead, B, T = tokens_shape
    n_models = lead[0] if lead else 1
    per_string = n_models * config.n_heads * T * T  # elements of [..., H, T, T] per string
    return max(MIN_SLICE, min(B, SLICE_ELEMENTS // per_string))


def _pool(n_threads: int) -> ThreadPoolExecutor:
    if n_threads not in _pools:
        _pools[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="minicount")
    return _pools[n_threads]


def _slice_loss_and_grads(params, tokens, targets, mask, config, n):
    """One slice's share of the batch loss ([] or [M]) and gradients; n: the whole batch's count."""
    logits, cache = forward_with_cache(params, tokens, config)
    loss, loss_cache = layers.bce_with_logits_forward(logits, targets, mask, n=n)
    dlogits = layers.bce_with_logits_backward(1.0, loss_cache)
    return loss, backward(dlogits, cache, config, params)


def loss_and_grads_sliced(params, tokens, targets, mask, config: ModelConfig, *,
                          slice_strings: int | None = None, n_threads: int | None = None):
    """``model.loss_and_grads_all`` computed in slices of the batch axis, on a thread pool.

    tokens [..., B, T], targets [..., B, T, V], mask [..., B, T] (a leading [M] for an
    ensemble). slice_strings: strings per slice (default: ``slice_size``); n_threads:
    threads working through the slices (default: the cores this process may use).
    Returns (losses [] or [M], grads) like loss_and_grads_all.
    """
    xp = array_module(tokens)
    B = tokens.shape[-2]
    if xp is not __import__("numpy"):
        slice_strings, n_threads = B, 1
    step = slice_strings or slice_size(tokens.shape, config)
    n_threads = n_threads or default_threads()
    n = mask.sum(axis=(-2, -1)) * targets.shape[-1]  # [] or [M]: terms in the whole batch's mean

    def run(start):
        s = slice(start, start + step)
        return _slice_loss_and_grads(params, tokens[..., s, :], targets[..., s, :, :],
                                     mask[..., s, :], config, n)

    starts = range(0, B, step)
    if n_threads == 1 or len(starts) == 1:
        results = map(run, starts)
    else:
        results = _pool(n_threads).map(run, starts)
    loss, grads = None, None
    for slice_loss, slice_grads in results:  # added in slice order: the same sum on every run
        if grads is None:
            loss, grads = slice_loss, slice_grads
        else:
            loss = loss + slice_loss
            for k, g in slice_grads.items():
                grads[k] += g
    return loss, grads
