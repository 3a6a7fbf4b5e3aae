"""How big a request may be: every size limit, and the memory a run needs, in one place.

Requests are checked against these before anything is allocated, so a typo such as
``--seeds 0-100000000`` is a one-line error instead of gigabytes of memory.

    MAX_ENSEMBLE          models trained at once (seeds of one run)
    MAX_PARAMS            parameters of one model
    MAX_LAYERS            blocks of one model
    MAX_STRING_LEN        symbols per string (max_len)
    n_params(config)      parameters of one model, counted without building them
    training_bytes(...)   memory a training run needs (an estimate from above)
    eval_bytes(...)       memory evaluating on n_eval strings needs
    memory_budget()       bytes a request may use: MINICOUNT_MAX_MEMORY, else physical memory
    memory_limit(device)  bytes a training run may use on device (the GPU's total, else the budget)
    fits(config, members, batch, length, device)
                          the one memory rule of a training run (training and the sweep)
    check_model(config)   ValueError naming the limit if one model is too big
    check_ensemble(n)     ValueError if n models are too many
    check_memory(n, what) ValueError if n bytes exceed memory_budget()

It reads the machine's memory size (and CuPy's, for the GPU) and changes nothing.
"""

from __future__ import annotations

import os

MAX_ENSEMBLE = 1024
EVAL_STRINGS = 1024  # metrics.evaluate runs in chunks of at most this many strings
MAX_PARAMS = 2**28  # 268M: 1 GiB of float32 per model
MAX_LAYERS = 256
MAX_STRING_LEN = 2**16
V = 6  # the Count01 vocabulary (data.V; repeated here so this module imports nothing)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def n_params(config) -> int:
    """Parameters of one model of ``config`` (a ModelConfig), by arithmetic only."""
    c = config
    per_block = 4 * c.n_heads * c.d_model * c.d_head
    if c.layernorm:
        per_block += 2 * c.d_model
    if c.mlp:
        per_block += 2 * c.d_model * c.d_mlp + c.d_mlp + c.d_model
        per_block += 2 * c.d_model if c.layernorm else 0
    total = c.n_layers * per_block + 2 * c.d_vocab * c.d_model + c.d_vocab
    total += c.n_ctx * c.d_model if c.pos_emb else 0
    total += 2 * c.d_model if c.layernorm else 0
    return total


def check_model(config) -> None:
    """ValueError naming the limit if one model of config is too big to build."""
    if config.n_layers > MAX_LAYERS:
        raise ValueError(f"n_layers={config.n_layers} is over the limit of {MAX_LAYERS}")
    n = n_params(config)
    if n > MAX_PARAMS:
        raise ValueError(f"the model has {n:,} parameters, over the limit of {MAX_PARAMS:,}")


def check_ensemble(n_models: int) -> None:
    """ValueError if n_models models are more than one run may train."""
    if n_models > MAX_ENSEMBLE:
        raise ValueError(f"{n_models:,} models in one run is over the limit of {MAX_ENSEMBLE}")


def _activation_floats(config, n_strings: int, seq_len: int) -> int:
    """Floats of the forward and backward activations of n_strings strings of seq_len."""
    c = config
    per_position = c.n_layers * (
        4 * c.n_heads * seq_len + 8 * c.d_model + 6 * c.n_heads * c.d_head + 3 * c.d_mlp * c.mlp
    )
    return n_strings * seq_len * (per_position + 4 * c.d_vocab)


def training_bytes(
    config, n_models: int, batch_size: int, seq_len: int, n_eval: int, itemsize: int = 4
) -> int:
    """Memory (bytes, an estimate from above) to train n_models models of config on batches
    of batch_size strings of seq_len positions, evaluating on n_eval strings."""
    state = 6 * n_models * n_params(config) * itemsize  # params, grads, moments, slack
    batch = n_models * batch_size * seq_len * (V * 4 + 8 + 1)
    work = n_models * _activation_floats(config, batch_size, seq_len) * itemsize
    return state + batch + work + eval_bytes(config, n_models, n_eval, seq_len, itemsize)


def eval_bytes(config, n_models: int, n_eval: int, seq_len: int, itemsize: int = 4) -> int:
    """Memory (bytes, from above) to evaluate n_models models on n_eval strings of seq_len
    (the held-out set, in chunks of at most EVAL_STRINGS strings, and all its logits)."""
    data = n_eval * seq_len * (V * 4 + 8 + 1)
    logits = 2 * n_models * n_eval * seq_len * V * itemsize
    work = n_models * _activation_floats(config, min(n_eval, EVAL_STRINGS), seq_len) * itemsize
    return data + logits + work


def memory_budget() -> int:
    """Bytes one request may use: MINICOUNT_MAX_MEMORY (bytes) if set, else physical memory."""
    value = os.environ.get("MINICOUNT_MAX_MEMORY", "")
    if value:
        if not value.isdigit():
            raise ValueError(f"MINICOUNT_MAX_MEMORY must be a number of bytes, got {value!r}")
        return int(value)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 2**40


def memory_limit(device: str) -> int:
    """Bytes a training run may use on ``device``: the GPU's total memory (CuPy's
    memGetInfo), else memory_budget() (MINICOUNT_MAX_MEMORY, else physical memory)."""
    if device == "gpu":
        import cupy  # (only asked for the GPU, where CuPy is there)

        return int(cupy.cuda.runtime.memGetInfo()[1])
    return memory_budget()


def fits(
    config, members: int, batch: int, length: int, device: str, *, n_eval: int, itemsize: int = 4
) -> bool:
    """The one memory rule of a training run, for ``train`` and for every cell of a sweep:
    ``members`` models of config trained on batches of ``batch`` strings of ``length``
    positions (and evaluated on ``n_eval`` strings) fit when training_bytes, an estimate from
    above, is at most 100% of memory_limit(device): the GPU's total memory on the GPU, else
    memory_budget(). No further margin: the estimate is already an upper bound
    (tests/test_limits.py), and MINICOUNT_MAX_MEMORY means what it says."""
    need = training_bytes(config, members, batch, length, n_eval, itemsize)
    return need <= memory_limit(device)


def check_memory(nbytes: int, what: str) -> None:
    """ValueError naming the limit if nbytes (for ``what``) exceed memory_budget()."""
    budget = memory_budget()
    if nbytes > budget:
        raise ValueError(
            f"{what} needs about {_gib(nbytes)} of memory, over the limit of {_gib(budget)} "
            "(physical memory, or MINICOUNT_MAX_MEMORY)"
        )
