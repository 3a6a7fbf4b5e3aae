"""Running the forward pass with hooks: record activations, or edit them on the way.

Every instrument reads or edits the model through the hooks of ``minicount.model.forward``
(full names such as ``blocks.0.attn.hook_result``, made by ``minicount.names.act_name``),
never by changing the parameters. The instruments run the fast attention path
(fast/attention.py), which has the same hooks as the textbook one and the same numbers up
to rounding (tests/test_fast_paths.py): an analysis makes many passes over whole held-out
sets.
"""

from __future__ import annotations

from ..model import forward
from ..names import n_members


def run_with_cache(params: dict, tokens, config, names, *, hooks=None):
    """Logits [B, T, V] and a dict of the activations named in ``names``.

    ``hooks`` are further editing hooks; a name both edited and recorded is recorded after
    the edit.
    """
    hooks = dict(hooks or {})
    cache = {}
    for name in names:
        edit = hooks.get(name)

        def record(a, name=name, edit=edit):
            a = edit(a) if edit is not None else a
            cache[name] = a
            return a

        hooks[name] = record
    logits = forward(params, tokens, config, hooks=hooks, attention="fast")
    return logits, cache


def check_single(params: dict) -> None:
    """Refuse ensemble parameters: the instruments work on one model (slice member i first)."""
    if n_members(params) is not None:
        raise ValueError(
            "analysis works on a single model; for an ensemble pass member i as "
            "minicount.member(params, i)"
        )
