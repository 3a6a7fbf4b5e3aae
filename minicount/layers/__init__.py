"""One module per concept, each a pair of free functions:

    out, cache = concept_forward(inputs..., params...)
    d_inputs..., d_params... = concept_backward(d_out, cache)

The backward takes the gradient of the output and what the forward saved, nothing else;
no layer keeps state, so one function can be used any number of times in a model.

Shapes. Activations are [..., B, T, d]: the optional leading ``...`` is a model axis [M]
for an ensemble of M models trained in one step (absent for a single model). Parameters
carry the same optional leading axis. Dense layers view activations as rows,
[..., B*T, d], so that one matmul serves a single model ([B*T, d] @ [d, k]) and an
ensemble ([M, B*T, d] @ [M, d, k]) alike.
"""

from .attention import attention_backward, attention_forward
from .embedding import (
    embedding_backward,
    embedding_forward,
    pos_embedding_backward,
    pos_embedding_forward,
)
from .layernorm import layernorm_backward, layernorm_forward
from .loss import bce_with_logits_backward, bce_with_logits_forward
from .mlp import mlp_backward, mlp_forward
from .unembed import unembed_backward, unembed_forward

__all__ = [
    "attention_backward",
    "attention_forward",
    "bce_with_logits_backward",
    "bce_with_logits_forward",
    "embedding_backward",
    "embedding_forward",
    "layernorm_backward",
    "layernorm_forward",
    "mlp_backward",
    "mlp_forward",
    "pos_embedding_backward",
    "pos_embedding_forward",
    "unembed_backward",
    "unembed_forward",
]
