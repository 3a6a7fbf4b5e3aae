"""The fast path of a training step's loss and gradients: slice by slice, on several threads.

``model.loss_and_grads_all`` is the textbook step (the whole batch in one forward and one
backward); ``loss_and_grads_sliced`` here gives the same loss and gradients up to rounding
(tests/test_fast_paths.py) and is what training runs unless ``TrainConfig.path`` is
"textbook". Four things make NumPy slow on a whole batch of the study's model, and each has a cure:

- The [B, H, T, T] attention arrays (4 MiB each for B = 256) do not fit in a core's
  cache, so every pass over them goes out to memory. Cure: cut the batch into slices
  whose attention arrays fit in cache (``slice_size``), run forward and backward per slice.
- NumPy does elementwise work on one core. Cure: a pool of threads works through the
  slices; NumPy releases the GIL inside array operations, so they run at the same time.
  BLAS is held to one thread meanwhile (with threadpoolctl): a slice's matmuls are too
  small to gain from more, and BLAS threads that spin-wait on busy cores cost a lot.
- Strings of 1 to 32 symbols are padded to 33 positions: on average half of every
  [T, T] array is padding. Cure: sort the strings by length, so that a slice's strings
  share their padding, and leave it out (``sort_by_length``, ``positions_in_use``).
- glibc gives large freed blocks back to the kernel, and the next array of that size
  then costs a page fault per 4 KiB page (a few microseconds each on a VM: several ms per
  step). Cure: ``keep_freed_memory`` asks glibc to keep them for reuse. It changes the
  whole process, so nothing here calls it: the training loop does, once, where a reader
  sees it (train.py), and the benchmark does too.

Gradients add up across slices because every slice divides its loss by the whole batch's
count of terms. The result equals ``model.loss_and_grads_all`` up to floating-point
rounding (tested). On CuPy the whole batch is one call: a GPU wants big arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time

import numpy as np

from .. import layers
from ..backend import array_module
from ..data import DataConfig, sample_batch
from ..model import ModelConfig, backward, forward_with_cache, init_params
from ..threads import blas_limit, default_threads, pool

SLICE_ELEMENTS = 2**18  # aim for [slice, H, T, T] attention arrays of 1 MiB in float32
MIN_SLICE = 8  # strings; smaller slices cost more in Python overhead than they save


def keep_freed_memory(nbytes: int = 256 * 2**20) -> bool:
    """Ask glibc's malloc to reuse freed blocks below nbytes instead of returning them.

    Raises M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (process-wide). Returns False where
    there is no glibc (macOS, Windows, musl), where nothing changes.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    kept = mallopt(M_TRIM_THRESHOLD, nbytes)
    reused = mallopt(M_MMAP_THRESHOLD, min(nbytes, 32 * 2**20))  # glibc refuses more than 32 MiB
    return bool(kept) and bool(reused)


def slice_size(tokens_shape: tuple, config: ModelConfig, n_threads: int = 1) -> int:
    """Strings per slice for tokens [..., B, T].

    On one thread the attention arrays of a slice stay near SLICE_ELEMENTS (cache-sized).
    On more, slices are bigger, about two per thread and up to 4x the size: every NumPy
    call hands the GIL over, so fewer, longer calls share the cores better (measured).
    """
    *lead, B, T = tokens_shape
    n_models = lead[0] if lead else 1
    per_string = n_models * config.n_heads * T * T  # elements of [..., H, T, T] per string
    if n_threads == 1:
        return min(B, max(MIN_SLICE, SLICE_ELEMENTS // per_string))
    step = min(math.ceil(B / (2 * n_threads)), max(MIN_SLICE, 4 * SLICE_ELEMENTS // per_string))
    return math.ceil(B / (n_threads * math.ceil(B / (n_threads * step))))  # equal shares


def _slice_loss_and_grads(params, tokens, targets, mask, config, n, attention):
    """One slice's share of the batch loss ([] or [M]) and gradients; n: the whole batch's count."""
    logits, cache = forward_with_cache(params, tokens, config, check=False, attention=attention)
    loss, loss_cache = layers.bce_with_logits_forward(logits, targets, mask, n=n)
    dlogits = layers.bce_with_logits_backward(1.0, loss_cache)
    return loss, backward(dlogits, cache, config, params)


def sort_by_length(tokens, targets, mask):
    """The batch with each model's strings in order of length, shortest first.

    tokens [..., B, T], targets [..., B, T, V], mask [..., B, T]. The loss and its gradients
    are sums over strings, so the order changes nothing but rounding; sorted, the strings
    of a slice have similar lengths and share most of their padding.
    """
    order = np.argsort(mask.sum(axis=-1), axis=-1, kind="stable")  # [..., B]

    def take(a):
        index = order.reshape(order.shape + (1,) * (a.ndim - order.ndim))
        return np.take_along_axis(a, index, axis=order.ndim - 1)

    return take(tokens), take(targets), take(mask)


def positions_in_use(mask) -> int:
    """1 + the last position that is real in any string of mask [..., B, T] (at least 1).

    Later positions are padding everywhere: attention is causal, so nothing before them
    reads them, and the loss gives them no weight; a slice can leave them out exactly.
    """
    used = mask.reshape(-1, mask.shape[-1]).any(axis=0)  # [T]
    return int(np.flatnonzero(used)[-1]) + 1 if used.any() else 1


def loss_and_grads_sliced(
    params,
    tokens,
    targets,
    mask,
    config: ModelConfig,
    *,
    slice_strings: int | None = None,
    n_threads: int | None = None,
    trim_padding: bool = True,
    attention: str = "fast",
):
    """``model.loss_and_grads_all`` computed in slices of the batch axis, on a thread pool.

    tokens [..., B, T], targets [..., B, T, V], mask [..., B, T] (a leading [M] for an
    ensemble). slice_strings: strings per slice (default: ``slice_size``); n_threads:
    threads working through the slices (default: ``threads.default_threads`` measured with
    ``training_step_timer``);
    trim_padding: sort the strings by length and leave out each slice's trailing padding
    (``positions_in_use``), which changes nothing but rounding; attention: the attention
    path of every slice ("fast" or "fused"; see ``model.ATTENTION``).
    Returns (losses [] or [M], grads) like loss_and_grads_all.
    """
    B = tokens.shape[-2]
    if array_module(tokens) is not np:
        slice_strings, n_threads, trim_padding = B, 1, False
    n_threads = n_threads or default_threads(training_step_timer)
    step = slice_strings or slice_size(tokens.shape, config, n_threads)
    n = mask.sum(axis=(-2, -1)) * targets.shape[-1]  # [] or [M]: terms in the whole batch's mean
    if trim_padding and tokens.shape == mask.shape == targets.shape[:-1]:
        tokens, targets, mask = sort_by_length(tokens, targets, mask)

    errors = np.geterr()  # NumPy's errstate is per thread: the workers take the caller's

    def run(start):
        s = slice(start, start + step)
        T = positions_in_use(mask[..., s, :]) if trim_padding else tokens.shape[-1]
        with np.errstate(**errors):
            return _slice_loss_and_grads(
                params,
                tokens[..., s, :T],
                targets[..., s, :T, :],
                mask[..., s, :T],
                config,
                n,
                attention,
            )

    starts = range(0, B, step)[::-1]  # the longest strings first: threads finish together
    with blas_limit(1):  # a slice's matmuls are too small to gain from BLAS threads
        if n_threads == 1 or len(starts) == 1:
            results = list(map(run, starts))
        else:
            results = list(pool(n_threads).map(run, starts))
    loss, grads = results[0]
    for slice_loss, slice_grads in results[1:]:  # added in a fixed order: the same sum every run
        loss = loss + slice_loss
        for k, g in slice_grads.items():
            grads[k] += g
    return loss, grads


TIMED_BATCH = 256  # strings per timed step: TrainConfig's default batch_size (tested equal)


def training_step_timer(batch_size: int = TIMED_BATCH, max_len: int = DataConfig.max_len):
    """A function n_threads -> seconds of one training forward+backward
    (``loss_and_grads_sliced``) of the default model on a default batch (TrainConfig's
    batch_size strings of up to max_len symbols) on n_threads threads: what
    ``threads.measure_threads`` times to choose the default thread count."""
    config = ModelConfig()
    params = init_params(config, 0)
    tokens, targets, mask = sample_batch(batch_size, max_len, np.random.default_rng(0))

    def seconds(n_threads: int) -> float:
        t0 = time.perf_counter()
        loss_and_grads_sliced(params, tokens, targets, mask, config, n_threads=n_threads)
        return time.perf_counter() - t0

    return seconds
