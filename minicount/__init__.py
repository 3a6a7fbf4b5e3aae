"""minicount: a from-scratch transformer with hand-written backprop that learns to count.

Public API (see README.md):
    ModelConfig, init_params, init_ensemble (member, members, stack, n_members: its
    members one at a time and back), forward, loss_and_grads,
    train, TrainConfig, save, load, evaluate (minicount.metrics.evaluate),
    data (Count01: encode, decode, sample_batch, ...), backend (NumPy / CuPy),
    names (act_name, param_name: TransformerLens names). The textbook layers are in
    minicount.layers, their fast paths in minicount.fast.

Importing it touches nothing: no files, no global settings, no CuPy import.
"""

__version__ = "0.1.0"

from . import analysis, backend, data, layers, metrics, names  # noqa: E402
from .checkpoint import load, load_checkpoint, save  # noqa: E402
from .metrics import evaluate  # noqa: E402
from .model import (  # noqa: E402
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
from .train import NonFiniteError, TrainConfig, train  # noqa: E402

__all__ = [
    "ModelConfig", "TrainConfig", "analysis", "backend", "backward", "data", "evaluate",
    "forward", "forward_with_cache", "init_ensemble", "init_params", "layers", "load",
    "load_checkpoint", "loss_and_grads", "member", "members", "metrics", "n_members", "names",
    "param_shapes", "save", "stack", "train", "NonFiniteError", "__version__",
]  # fmt: skip
