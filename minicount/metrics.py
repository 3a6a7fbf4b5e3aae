"""The study's metrics (docs/method.md §3), computed from the EOS score s_t = logits[t, EOS].

- l-acc: fraction of real positions where the decision s_t > 0 equals y_t
- s-acc: fraction of sequences whose decision is right at every position
- ROC AUC: threshold-free separability of s_t against y_t (ties count one half)
- next-set accuracy: fraction of positions where all V columns are right; and the loss

Pure array code: reads its inputs, returns new values.
"""

from __future__ import annotations

import numpy as np

from . import limits
from .backend import array_module, device_of, to_device, to_numpy
from .data import EOS, DataConfig, eval_set
from .inputs import check_batch
from .layers import bce_with_logits_forward
from .model import forward
from .names import n_members


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counted one half (the Mann-Whitney U statistic over average ranks). Host arrays.
    Returns nan when one class is absent."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank (1-based) of each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def metrics_from_logits(logits, targets, mask) -> dict:
    """Metrics for one model from logits [B, T, V] (any backend), targets [B, T, V], mask [B, T]."""
    xp = array_module(logits)
    loss, _ = bce_with_logits_forward(
        logits, xp.asarray(targets, dtype=logits.dtype), xp.asarray(mask)
    )
    logits, targets, mask = (
        to_numpy(logits),
        np.asarray(to_numpy(targets)),
        np.asarray(to_numpy(mask)),
    )
    return metrics_from_scores(
        logits[..., EOS], targets[..., EOS], mask, logits=logits, targets=targets, loss=float(loss)
    )


def metrics_from_scores(scores, labels, mask, *, logits=None, targets=None, loss=None) -> dict:
    """l-acc, s-acc and ROC AUC from EOS scores [B, T] and labels [B, T] over the real positions."""
    scores, labels, mask = (
        np.asarray(scores),
        np.asarray(labels).astype(bool),
        np.asarray(mask, bool),
    )
    right = (scores > 0) == labels  # [B, T]
    out = {
        "l_acc": float(right[mask].mean()),
        "s_acc": float((right | ~mask).all(axis=-1).mean()),
        "roc_auc": roc_auc(scores[mask], labels[mask]),
    }
    if logits is not None:
        all_right = ((logits > 0) == (targets > 0.5)).all(axis=-1)
        out["next_set_acc"] = float(all_right[mask].mean())
    if loss is not None:
        out["loss"] = loss
    return out


EVAL_BYTES = 2**28  # the attention scores of one chunk of evaluate: 256 MiB


def eval_chunk(M: int | None, config, T: int) -> int:
    """Sequences per chunk of evaluate: at most limits.EVAL_STRINGS, and fewer where one chunk's
    attention scores [M, b, H, T, T] (float32) would pass EVAL_BYTES: the forward pass holds
    a few arrays of that size."""
    by_memory = EVAL_BYTES // ((M or 1) * config.n_heads * T * T * 4)
    return max(1, min(limits.EVAL_STRINGS, by_memory))


def check_eval_memory(ck: dict, n_eval: int, seq_len: int) -> None:
    """Refuse (naming the limit) evaluating the models of checkpoint ck (``load_checkpoint``)
    on n_eval strings of seq_len positions when it needs more memory than there is."""
    M = n_members(ck["params"]) or 1
    need = limits.eval_bytes(ck["config"], M, n_eval, seq_len)
    limits.check_memory(need, f"evaluating {M} model(s) on {n_eval} strings of {seq_len}")


def checkpoint_data(ck: dict, *, max_len, no_bos: bool, n_eval: int, eval_seed: int, long: bool):
    """The DataConfig of the held-out strings to measure checkpoint ck (``load_checkpoint``)
    on: the run's own max_len and BOS unless max_len (not None/0) or no_bos say otherwise.
    Refuses a held-out set too big for memory (with long, the longer set)."""
    saved = ck["info"].get("train", {})
    data = DataConfig(
        max_len=max_len or saved.get("max_len", DataConfig.max_len),
        bos=False if no_bos else saved.get("bos", DataConfig.bos),
        n_eval=n_eval,
        eval_seed=eval_seed,
    )
    check_eval_memory(ck, n_eval, (1 + long) * data.max_len + int(data.bos))
    return data


def evaluate_held_out(params: dict, data: DataConfig, config) -> dict:
    """Metrics (plain lists and floats) of params on the held-out set of data ("held_out") and
    on its longer set ("long"), where positional embeddings reach that far."""
    result = {}
    for name, long in (("held_out", False), ("long", True)):
        tokens, targets, mask = eval_set(data, long=long)
        if config.pos_emb and tokens.shape[-1] > config.n_ctx:
            continue  # positional embeddings stop at n_ctx
        with np.errstate(all="ignore"):  # huge but finite weights: metrics say it
            m = evaluate(params, tokens, targets, mask, config)
        result[name] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()}
    return result


def evaluate(
    params: dict, tokens, targets, mask, config, *, chunk: int | None = None, attention="fast"
) -> dict:
    """Metrics of a model on a batch, run in chunks of ``chunk`` sequences (by default
    eval_chunk: at most 1,024, and fewer where a chunk's attention would pass EVAL_BYTES;
    an ensemble of 32 on strings of 129 tokens would otherwise hold gigabytes at once).

    ``attention`` is the forward pass's path (model.ATTENTION): "fast" unless asked, as
    evaluation reads whole held-out sets; training passes its own TrainConfig.path.

    Keys: l_acc, s_acc, roc_auc, next_set_acc, loss. For an ensemble each value is a NumPy
    array [M] (one entry per member); for a single model a float. The batch may be on the
    host; it is moved to the parameters' device.
    """
    check_batch(*(np.asarray(to_numpy(a)) for a in (tokens, targets, mask)), params, config)
    device = device_of(params["embed.W_E"])
    M = n_members(params)
    chunk = chunk or eval_chunk(M, config, tokens.shape[-1])
    pieces = []
    for i in range(0, len(tokens), chunk):
        tok = to_device(np.asarray(to_numpy(tokens[i : i + chunk])), device)
        pieces.append(to_numpy(forward(params, tok, config, attention=attention)))
    logits = np.concatenate(pieces, axis=-3)  # [..., B, T, V]
    targets, mask = np.asarray(to_numpy(targets)), np.asarray(to_numpy(mask))
    if M is None:
        return metrics_from_logits(logits, targets, mask)
    per = [metrics_from_logits(logits[i], targets, mask) for i in range(M)]
    return {k: np.array([p[k] for p in per]) for k in per[0]}


# ------------------------------------------------------------ many score rows at once


def _sorted_with_labels(scores, labels):
    """Each row of scores [R, N] sorted, with labels [R, N] carried along: (values, labels).

    float32 scores are sorted as int64 keys (order-preserving integer image of the float,
    shifted left one bit, the label in the lowest bit): one plain sort, no argsort. Any
    other dtype is sorted in float64 through argsort.
    """
    xp = array_module(scores)
    if scores.dtype == xp.float32:
        bits = xp.ascontiguousarray(scores + xp.float32(0.0)).view(xp.int32)  # -0.0 -> +0.0
        # negative floats order backwards as integers: flip their 31 low bits
        ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(xp.int64)  # [R, N]
        keys = xp.sort((ordered << 1) | labels.astype(xp.int64), axis=-1)  # [R, N]
        return keys >> 1, (keys & 1).astype(bool)
    values = scores.astype(xp.float64)  # [R, N]
    order = xp.argsort(values, axis=-1)  # [R, N]
    return xp.take_along_axis(values, order, -1), xp.take_along_axis(labels, order, -1)


def _auc_rows(s, y):
    """ROC AUC of each row of scores [R, N] against labels [R, N] (bool): float64 [R]."""
    xp = array_module(s)
    R, N = s.shape
    values, lab = _sorted_with_labels(s, y)  # [R, N] each
    # tie groups, numbered over the flattened rows (a new row always starts a group)
    starts = xp.ones((R, N), dtype=bool)  # [R, N]
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    flat = starts.ravel()  # [R*N]
    group = xp.cumsum(flat, dtype=xp.int32) - 1  # [R*N] group of each element
    first = xp.flatnonzero(flat)  # [G] flat index of each group's first element
    last = xp.empty_like(first)  # [G] flat index of each group's last element
    last[:-1], last[-1] = first[1:] - 1, R * N - 1
    # average 1-based rank of a group's elements in the flattened rows; a row's own ranks
    # are these less the row's offset r * N
    avg_rank = (first + last) * 0.5 + 1.0  # [G]
    pos_rank_sum = (avg_rank[group].reshape(R, N) * lab).sum(axis=-1)  # [R]
    n_pos = lab.sum(axis=-1).astype(xp.float64)  # [R]
    n_neg = N - n_pos  # [R]
    offset = xp.arange(R, dtype=xp.float64) * N  # [R]
    u = pos_rank_sum - n_pos * offset - n_pos * (n_pos + 1) / 2.0  # [R]
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), xp.nan)  # [R]


def roc_auc_batched(scores, labels, *, block: int = 2**18):
    """ROC AUC of every row: scores [..., N], labels [N] or [..., N] -> float64 [...].

    The same number as ``roc_auc`` on each row (average ranks, ties one half; nan where a
    class is absent), computed for many rows at once on the module of the scores, in
    blocks of about ``block`` elements (small blocks stay in cache and bound the memory).
    """
    xp = array_module(scores)
    lead, N = scores.shape[:-1], scores.shape[-1]
    s = scores.reshape(-1, N)  # [R, N]
    R = s.shape[0]
    y = xp.broadcast_to(xp.asarray(labels).astype(bool), scores.shape).reshape(R, N)  # [R, N]
    if N == 0:
        return xp.full(lead, xp.nan)
    rows = max(1, block // N)
    parts = [_auc_rows(s[i : i + rows], y[i : i + rows]) for i in range(0, R, rows)]
    return (xp.concatenate(parts) if parts else xp.zeros(0)).reshape(lead)


def sequence_bounds(mask):
    """(starts [B], ends [B]): where each sequence's real positions lie among mask's True
    entries taken in row-major order, i.e. in ``x[..., mask]``. mask [B, T]."""
    xp = array_module(mask)
    ends = xp.cumsum(mask.sum(axis=-1))  # [B]
    return ends - mask.sum(axis=-1), ends


def accuracies_batched(scores, labels, starts, ends):
    """(l_acc [...], s_acc [...]) of the decisions scores > 0 on the real positions.

    scores [..., N] and labels [N] at the real positions (``x[..., mask]``); starts/ends [B]
    from ``sequence_bounds``: a sequence is right when none of its positions is wrong.
    """
    xp = array_module(scores)
    wrong = (scores > 0) != xp.asarray(labels).astype(bool)  # [..., N]
    l_acc = 1.0 - wrong.mean(axis=-1)  # [...]
    seen = xp.cumsum(wrong, axis=-1, dtype=xp.int32)  # [..., N] wrong positions so far
    seen = xp.concatenate([xp.zeros(seen.shape[:-1] + (1,), xp.int32), seen], axis=-1)
    wrong_per_seq = seen[..., ends] - seen[..., starts]  # [..., B]
    return l_acc, (wrong_per_seq == 0).mean(axis=-1)
