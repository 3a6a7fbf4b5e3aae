"""minicount: a from-scratch transformer with hand-written backprop that learns to count.

Public API (see README.md):
    ModelConfig, init_params, init_ensemble (member, members, stack, n_members: its
    members one at a time and back), forward, loss_and_grads,
    train, TrainConfig, save, load, evaluate (minicount.metrics.evaluate),
    data (Count01: encode, decode, sample_batch, ...), backend (NumPy / CuPy),
    names (act_name, param_name: TransformerLens names). The textbook layers are in
    minicount.layers, their fast paths in minicount.fast.

Importing it touches nothing: no files, no global settings, no CuPy import.
``__version__`` is the installed package's (importlib.metadata; see record.version).
"""

from . import analysis, backend, data, layers, metrics, names
from .checkpoint import load, load_checkpoint, save
from .metrics import evaluate
from .model import (
    ModelConfig,
    backward,
    forward,
    forward_with_cache,
    init_ensemble,
    init_params,
    loss_and_grads,
    member,
    members,
    n_members,
    param_shapes,
    stack,
)
from .record import version as _version
from .train import NonFiniteError, TrainConfig, train

__all__ = [
    "ModelConfig", "TrainConfig", "analysis", "backend", "backward", "data", "evaluate",
    "forward", "forward_with_cache", "init_ensemble", "init_params", "layers", "load",
    "load_checkpoint", "loss_and_grads", "member", "members", "metrics", "n_members", "names",
    "param_shapes", "save", "stack", "train", "NonFiniteError", "__version__",
]  # fmt: skip


def __getattr__(name: str):
    """``minicount.__version__``: the installed package's version (importlib.metadata), read
    when first asked for (record.version), so that importing minicount reads nothing."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'minicount' has no attribute {name!r}")
