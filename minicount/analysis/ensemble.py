"""analyze_ensemble: every instrument of analyze_model for all M members of an ensemble at once.

For a one-layer, attention-only model without LayerNorm the EOS score is a sum of paths,

    s = offset + Σ_h c_h          (offset = direct path + b_U[EOS], c_h = head h's part)

so one forward pass over the ensemble (chunked over the batch) gives everything the
instruments need, with the model axis [M] kept in front of every array:

    ablation        subset S keeps heads keep[S]:  s_S = offset + keep[S] @ c (+ the fill of
                    the ablated heads in mean mode, a constant per subset)
    semantics       c_h alone, offset + c_h, offset + H c_h
    interventions   an edit of head h's attention changes only c_h: s' = s - c_h + c'_h, and
                    c'_h for every head comes from sums of its unedited pattern over the
                    keys of tokens 0, 1, 2 and the rest (an edit rescales or drops one such
                    class of keys: _edited_from_sums); head h reading head g's values
                    contributes pattern_h @ (v_g · W_O[h] W_U[:, EOS])
    attention       score tables [M, H, V, V] (NoPE) and masked sums over the patterns

Other configs are refused: there the heads do not add up, and each member needs
analyze_model's hooked forward passes.

It reads its inputs and returns new values. On the CPU it runs its pieces on the package's
analysis threads (threads.pool) and holds BLAS to one thread meanwhile (threads.blas_limit).
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of, to_device, to_numpy
from ..data import BOS, EOS, ONE, TWO, ZERO, V
from ..fast.attention import causal_softmax, shift_free
from ..inputs import check_params
from ..layers import bce_with_logits_forward
from ..layers.attention import causal_mask
from ..metrics import accuracies_batched, roc_auc_batched, sequence_bounds
from ..model import forward, stack
from ..names import act_name, param_name
from ..progress import Progress
from ..record import jsonable
from ..threads import analysis_threads, blas_limit, pool
from .ablation import MODES, head_sets
from .aggregation import aggregation_batched
from .analyze import analyze_model
from .attention_stats import (
    PAIRS,
    _geo_mean,
    _row_nanmean,
    exact_weights,
    means_from_sums,
    query_sums,
)
from .attribution import exactness_problem
from .hooks import run_with_cache
from .interventions import SWAP_ALL_PAIRS_UP_TO, force_weight, intervention_list, removed_keys
from .linear import linear_fit_batched
from .scoring import METRICS
from .semantics import two_sided

CHUNK_BYTES = 1024 * 2**20  # about this much memory for one chunk of the forward pass
ROW_BYTES = 64 * 2**20  # and for one block of score rows being measured


class _Work:
    """Independent pieces of the analysis, run on n threads (NumPy releases the GIL inside
    array operations) or, for n = 1, in turn as they are handed in."""

    def __init__(self, n: int, progress: Progress | None = None):
        self.n = n
        self.executor = pool(n, "analysis") if n > 1 else None  # (pieces submit nothing)
        self.progress = progress

    def expect(self, pieces: int) -> None:
        """Tell the progress (if any) how many pieces the analysis has."""
        if self.progress is not None:
            self.progress.set_total(self.progress.done + pieces)

    def done(self, what: str) -> None:
        """One piece of work ended."""
        if self.progress is not None:
            self.progress.describe(f"analysis: {what}")
            self.progress.advance(1)

    def wait(self, pieces: list, what: str) -> list:
        """The values of submitted pieces, each counted as it ends."""
        values = []
        for piece in pieces:
            values.append(piece())
            self.done(what)
        return values

    def submit(self, f, *args, **kwargs):
        """A function that returns f(*args, **kwargs)."""
        if self.executor is None:
            value = f(*args, **kwargs)
            return lambda: value
        return self.executor.submit(f, *args, **kwargs).result

    def map(self, f, items) -> list:
        """[f(item) for item in items], in order."""
        if self.executor is None:
            return [f(item) for item in items]
        return list(self.executor.map(f, items))

    def groups(self, M: int) -> list[tuple[int, int]]:
        """(start, stop) of n groups of consecutive models (fewer if M < n)."""
        edges = np.linspace(0, M, min(self.n, M) + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def check_ensemble(params: dict, config) -> int:
    """M, or a ValueError saying why these params cannot be analysed all at once."""
    M = check_params(params, config)
    if M is None:
        raise ValueError(
            "analyze_ensemble needs ensemble params (a leading model axis [M] on every "
            "array); for a single model use analyze_model"
        )
    if M == 0:
        raise ValueError("analyze_ensemble got an empty ensemble (M = 0)")
    problem = exactness_problem(config)
    if problem is not None:
        raise ValueError(
            f"analyze_ensemble needs the exact head decomposition, and {problem}; "
            "run analyze_model on each member instead"
        )
    return M


# ---------------------------------------------------------------- the forward pass


def _eos_readouts(params: dict):
    """(u [M, H, d_head], w [M, d_model]): W_O[h] @ W_U[:, EOS] per head, and W_U[:, EOS]."""
    w = params["unembed.W_U"][..., EOS]  # [M, d_model]
    u = (params[param_name("W_O", 0)] @ w[:, None, :, None])[..., 0]  # [M, H, d_head]
    return u, w


def _offset(params: dict, tokens, w):
    """The direct path read out at EOS plus b_U[EOS]: [M, b, T] for tokens [b, T].

    Taken from a table per token (and per position), so that equal tokens get bitwise
    equal offsets: ROC AUC counts ties, and a matmul over all positions may round equal
    rows differently."""
    per_token = (params["embed.W_E"] @ w[..., None])[..., 0]  # [M, V, d] @ [M, d, 1] -> [M, V]
    offset = per_token[:, tokens] + params["unembed.b_U"][:, EOS][:, None, None]  # [M, b, T]
    if "pos_embed.W_pos" in params:
        T = tokens.shape[-1]
        per_position = (params["pos_embed.W_pos"][:, :T] @ w[..., None])[..., 0]  # [M, T]
        offset = offset + per_position[:, None, :]  # [M, b, T]
    return offset


def _value_contributions(pattern, vu):
    """pattern [M, b, H, T, T] @ vu [M, b, H, T] -> [M, b, H, T]: each head's EOS part."""
    return (pattern @ vu[..., None])[..., 0]


def _prefix_shaped(real) -> bool:
    """Whether every row of real [b, T] is True...True False...False: then a real query sees
    only real keys, and sums over keys need no mask."""
    return bool((real[:, 1:] <= real[:, :-1]).all())


def _attention_sums(pattern, tok, real, on_token=None) -> dict:
    """Masked sums behind the measured w_01, w_02 and BOS weight (see measured_weights):
    name -> (sums [M, H, 3], counts [3]). pattern [M, b, H, T, T], tok and real [b, T].

    on_token [M, b, H, T, V]: the weight on the keys of each token per query, where it is
    already known (any key mask: only real queries are read, and _prefix_shaped(real) is
    the caller's to check); else pattern @ the real keys' one-hot, in float64."""
    xp = array_module(pattern)
    one_hot = ((tok[..., None] == xp.arange(V)) & real[..., None]).astype(xp.float64)  # [b, T, V]
    if on_token is None:
        on_token = pattern.astype(xp.float64) @ one_hot[:, None]  # [M, b, H, T, V]
    on_token = on_token.astype(xp.float64)
    seen = xp.cumsum(one_hot, axis=1)[:, None]  # [b, 1, T, V] keys of each token so far
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        per_key = on_token / seen  # [M, b, H, T, V] mean weight on one key of each token
        for name, (a, b) in PAIRS.items():
            log_ratio = xp.log(per_key[..., b]) - xp.log(per_key[..., a])  # [M, b, H, T]
            ok = (seen[..., a] > 0) & (seen[..., b] > 0)  # [b, 1, T]
            out[name] = query_sums(log_ratio, ok, tok, real)
    out["bos_weight"] = query_sums(on_token[..., BOS], seen[..., BOS] > 0, tok, real)
    return out


def _softmax_without(scores, removed):
    """causal_softmax(where(removed, -inf, scores)) [..., T, T], but without the -inf, which
    would send it down its slow path (a shift of every row by its maximum)."""
    xp = array_module(scores)
    if not shift_free(scores):
        return causal_softmax(xp.where(removed, -xp.inf, scores))
    pattern = xp.exp(scores)  # [..., T, T]
    pattern *= causal_mask(scores.shape[-1], xp) & ~removed
    pattern *= (1.0 / pattern.sum(axis=-1))[..., None]
    return pattern


def _edited_by_softmax(scores, vu, tok) -> dict:
    """The attention edits of one head at a time by edited softmaxes (the interventions'
    own construction): {"w01", "w02", "ideal"}, each [M, b, H, T].

    scores [M, b, H, T, T] before the softmax, vu [M, b, H, T] each head's values read out
    at EOS, tok [b, T]. _edited_from_sums computes the same from sums over the pattern."""
    w01 = force_weight(scores, tok, ZERO, ONE, 1.0)  # [M, b, H, T, T]
    no_twos = removed_keys(tok, TWO, scores.shape[-1])  # [b, 1, T, T] w_02 = 0
    return {
        "w01": _value_contributions(causal_softmax(w01), vu),
        "w02": _value_contributions(_softmax_without(scores, no_twos), vu),
        "ideal": _value_contributions(_softmax_without(w01, no_twos), vu),
    }


EDIT_KEYS = (ZERO, ONE, TWO)  # the key tokens the attention edits treat apart; the rest: other


def _key_classes(tok, dtype):
    """[b, T, 4] one-hot of each key's class: token 0, 1, 2, or any other token."""
    xp = array_module(tok)
    parts = [tok == a for a in EDIT_KEYS]
    parts.append(~(parts[0] | parts[1] | parts[2]))
    return xp.stack(parts, axis=-1).astype(dtype)


def _edited_from_sums(S, C, tok, real):
    """The attention edits of every head from sums over its unedited pattern, or None where
    the pattern has lost too much precision for that (then use _edited_by_softmax).

    S [M, b, H, T, 4]: each query's total weight on the keys of each class (_key_classes),
    C [M, b, H, T, 4]: the same sums of weight times the key's value read out at EOS;
    tok, real [b, T]. Returns {"w01", "w02", "ideal"}: [M, b, H, T] in the dtype of S.

    An edit that scales the weights of one class of keys by f (force w_01 = 1:
    f = mean weight per 0-key / mean weight per 1-key, where the query sees both) or drops
    them (force w_02 = 0: the 2-keys, where the query sees another key) gives the query
    Σ_class f_class C_class / Σ_class f_class S_class: the softmax of the edited scores,
    renormalised, without forming it. Every denominator is a sum of non-negative weights,
    so nothing cancels; it is refused where a weight it divides by is below 2^30 times the
    smallest normal float (the pattern holds too few digits there).
    """
    xp = array_module(S)
    dtype = S.dtype
    S, C = S.astype(xp.float64), C.astype(xp.float64)  # [M, b, H, T, 4]
    seen = xp.cumsum(_key_classes(tok, xp.float64), axis=1)  # [b, T, 4] keys so far
    n0, n1, n2, n_other = (seen[..., i][:, None] for i in range(4))  # [b, 1, T]
    both = (n0 > 0) & (n1 > 0)  # [b, 1, T] w_01 is defined
    removed = (n2 > 0) & (n0 + n1 + n_other > 0)  # [b, 1, T] 2-keys removed
    s0, s1, s2, s_other = (S[..., i] for i in range(4))  # [M, b, H, T]
    c0, c1, c2, c_other = (C[..., i] for i in range(4))
    low = float(np.finfo(dtype).tiny) * 2.0**30
    kept = s_other + s0 + s1  # weight on the keys that survive the removal of the 2s
    bad = (both & ((s0 < low) | (s1 < low))) | (removed & (kept < low))  # [M, b, H, T]
    if bool((bad & real[:, None]).any()):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        f = xp.where(both, (s0 * n1) / (s1 * n0), 1.0)  # [M, b, H, T] scale of the 1-keys
    f = xp.where(xp.isfinite(f), f, 1.0)  # only outside both, or at queries not measured
    keep2 = xp.where(removed, 0.0, 1.0)  # [b, 1, T]
    base_c, base_s = c_other + c0, s_other + s0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "w01": (base_c + f * c1 + c2) / (base_s + f * s1 + s2),
            "w02": (base_c + c1 + keep2 * c2) / (base_s + s1 + keep2 * s2),
            "ideal": (base_c + f * c1 + keep2 * c2) / (base_s + f * s1 + keep2 * s2),
        }
    return {k: v.astype(dtype) for k, v in out.items()}


def _chunk(params, tokens, mask, config, edits: bool) -> dict:
    """One forward pass over a chunk of b sequences (tokens, mask [b, T]), and what the
    instruments need from it, every array with the model axis in front.

    Everything read from the attention patterns comes from one product of each head's
    pattern [T, T] with a few columns per key: its one-hot token (the attention sums), and
    for the interventions the values of every head read out through this head's W_O
    (cross: head h reading head g's values) and the per-class sums of _edited_from_sums.
    """
    names = {n: act_name(n, 0) for n in ("pattern", "z", "v", "attn_scores")}
    recorded = [names[n] for n in ("pattern", "z", "v")] + ([names["attn_scores"]] if edits else [])
    logits, cache = run_with_cache(params, tokens, config, recorded)  # [M, b, T, V]
    xp = array_module(logits)
    u, w = _eos_readouts(params)  # [M, H, d_head], [M, d_model]
    z = cache[names["z"]]  # [M, b, H, T, d_head]
    pattern = cache[names["pattern"]]  # [M, b, H, T, T]
    M, b, H, T = pattern.shape[:4]
    real = mask.astype(bool)  # [b, T]
    dtype = pattern.dtype
    one_hot = xp.broadcast_to(
        (tokens[..., None] == xp.arange(V)).astype(dtype)[None, :, None], (M, b, H, T, V)
    )  # [M, b, H, T, V] every key's token
    columns = [one_hot]
    if edits:
        v = cache[names["v"]]  # [M, b, H, T, d_head]
        # v_g · u_h for every pair: [M, b, G, T, d_head] @ [M, 1, 1, d_head, H] -> [M, b, G, T, H]
        v_read = (v @ u.swapaxes(-1, -2)[:, None, None]).transpose(0, 1, 4, 3, 2)  # [M, b, H, T, G]
        vu = (v @ u[:, None, :, :, None])[..., 0]  # [M, b, H, T] each head's values read out
        classes = _key_classes(tokens, dtype)[None, :, None]  # [1, b, 1, T, 4]
        columns += [v_read, classes * vu[..., None]]  # [M, b, H, T, G], [M, b, H, T, 4]
    product = pattern @ xp.concatenate(columns, axis=-1)  # [M, b, H, T, V (+ G + 4)]
    on_token = product[..., :V]  # [M, b, H, T, V] weight on the keys of each token
    out = {
        "logits": logits,
        "c": (z @ u[:, None, :, :, None])[..., 0],  # [M, b, H, T]
        "offset": _offset(params, tokens, w),  # [M, b, T]
        # Σ of z over the real positions, in float64: the mean-ablation means
        "z_sum": (z.astype(xp.float64) * real[:, None, :, None]).sum(axis=(1, 3)),  # [M, H, dh]
        "attention": _attention_sums(
            pattern, tokens, real, on_token if _prefix_shaped(real) else None
        ),
    }
    if edits:
        cross = product[..., V : V + H]  # [M, b, H, T, G]
        class_sums = xp.stack([on_token[..., a] for a in EDIT_KEYS], axis=-1)  # [M, b, H, T, 3]
        others = [i for i in range(V) if i not in EDIT_KEYS]
        S = xp.concatenate([class_sums, on_token[..., others].sum(-1, keepdims=True)], axis=-1)
        edited = _edited_from_sums(S, product[..., V + H :], tokens, real)
        if edited is None:  # a weight underflowed: the edited softmaxes themselves
            edited = _edited_by_softmax(cache[names["attn_scores"]], vu, tokens)
        out["edits"] = {**edited, **_cross_terms(cross)}
    return out


def _cross_terms(cross) -> dict:
    """What the value interventions read from cross [M, b, H, T, G] (head h reading head
    g's values): all of it for H <= SWAP_ALL_PAIRS_UP_TO, else its mean over g and the roll."""
    H = cross.shape[2]
    if H <= SWAP_ALL_PAIRS_UP_TO:
        return {"cross": cross}  # [M, b, H, T, G]
    xp = array_module(cross)
    nxt = ((xp.arange(H) + 1) % H)[None, None, :, None, None]  # [1, 1, H, 1, 1]
    return {
        "mean": cross.mean(axis=-1),  # [M, b, H, T]
        "roll": xp.take_along_axis(cross, nxt, axis=-1)[..., 0],  # [M, b, H, T]
    }


def _chunk_size(M: int, H: int, T: int, edits: bool, threads: int = 1) -> int:
    """Sequences per chunk so that the [M, b, H, T, T] arrays of the chunks being computed at
    once (one per thread) stay near CHUNK_BYTES."""
    per_sequence = M * H * T * (T * 8 * (3 + edits) + (V + H + 4) * 8 * 3)
    return max(1, CHUNK_BYTES // (threads * per_sequence))


def _forward_all(params, tokens, mask, config, edits: bool, work: _Work | None = None) -> dict:
    """_chunk over the whole batch (the chunks shared out by work): per-position arrays
    joined on the batch axis, the attention sums added up; c and the edited parts as
    [M, H, B, T]."""
    M, (B, T) = params["embed.W_E"].shape[0], tokens.shape
    xp = array_module(params["embed.W_E"])
    work = work or _Work(1)
    size = _chunk_size(M, config.n_heads, T, edits, work.n)
    if work.n > 1:  # at least two chunks per thread
        size = max(1, min(size, -(-B // (2 * work.n))))
    parts = work.map(
        lambda i: _chunk(params, tokens[i : i + size], mask[i : i + size], config, edits),
        range(0, B, size),
    )
    heads_first = lambda a: a.transpose(0, 2, 1, *range(3, a.ndim))  # noqa: E731 [M, H, b, ...]
    out = {
        "logits": xp.concatenate([q["logits"] for q in parts], axis=1),  # [M, B, T, V]
        "c": heads_first(xp.concatenate([q["c"] for q in parts], axis=1)),  # [M, H, B, T]
        "offset": xp.concatenate([q["offset"] for q in parts], axis=1),  # [M, B, T]
        "z_sum": sum(q["z_sum"] for q in parts),  # [M, H, d_head]
        "attention": {
            name: tuple(sum(q["attention"][name][i] for q in parts) for i in range(2))
            for name in parts[0]["attention"]
        },
    }
    if edits:
        out["edits"] = {
            k: heads_first(xp.concatenate([q["edits"][k] for q in parts], axis=1))
            for k in parts[0]["edits"]
        }  # [M, H, B, T] (cross: [M, H, B, T, G])
    return out


# ------------------------------------------------------------------ measuring scores


class Positions:
    """The real positions of the held-out batch, where every score row is measured."""

    def __init__(self, targets, mask, device: str):
        self.mask = to_device(np.asarray(to_numpy(mask), dtype=bool), device)  # [B, T]
        labels = np.asarray(to_numpy(targets))[..., EOS] > 0.5  # [B, T]
        self.labels = to_device(labels, device)[self.mask]  # [N]
        self.starts, self.ends = sequence_bounds(self.mask)  # [B] each

    def real(self, a):
        """a [..., B, T] -> [..., N] at the real positions."""
        return a[..., self.mask]

    def metrics(self, scores, *, auc: bool = True) -> dict:
        """l_acc, s_acc (and roc_auc) of score rows [..., N]: float64 host arrays [...]."""
        lead, N = scores.shape[:-1], scores.shape[-1]
        flat = scores.reshape(-1, N)  # [R, N]
        rows = max(1, ROW_BYTES // (48 * N))
        out = {k: [] for k in METRICS if auc or k != "roc_auc"}
        for i in range(0, flat.shape[0], rows):
            block = flat[i : i + rows]  # [r, N]
            l_acc, s_acc = accuracies_batched(block, self.labels, self.starts, self.ends)
            out["l_acc"].append(to_numpy(l_acc))
            out["s_acc"].append(to_numpy(s_acc))
            if auc:
                out["roc_auc"].append(to_numpy(roc_auc_batched(block, self.labels)))
        return {k: np.concatenate(v).reshape(lead) for k, v in out.items()}


def _row(metrics: dict, index) -> dict:
    """{l_acc, s_acc, roc_auc} of one row of batched metrics."""
    return {k: metrics[k][index] for k in METRICS}


# ---------------------------------------------------------------------- instruments


def _top_metrics(logits, targets, mask, at: Positions) -> dict:
    """metrics_from_logits for every member: each value [M]."""
    tgt = to_device(np.asarray(to_numpy(targets)), device_of(logits)).astype(logits.dtype)
    loss, _ = bce_with_logits_forward(logits, tgt, at.mask)  # [M]
    out = at.metrics(at.real(logits[..., EOS]))
    all_right = ((logits > 0) == (tgt > 0.5)).all(axis=-1)  # [M, B, T]
    out["next_set_acc"] = to_numpy(at.real(all_right).mean(axis=-1))
    out["loss"] = to_numpy(loss)
    return out


def _ablation_all(c, offset, fill_eos, at: Positions, H: int, subsets: bool):
    """The ablation study of every member: ([{"zero": rows, "mean": rows}] (no "means"),
    zero ablation's metrics [M, S] of every distinct kept set, kept set -> its index S).

    c [M, H, N], offset [M, N], fill_eos [M, H] (each head's mean output read out at EOS).
    AUC does not change when a row is shifted by a constant, so mean ablation (zero
    ablation plus the fills of the ablated heads) reuses zero ablation's AUC.
    """
    xp = array_module(c)
    sets = head_sets(H, subsets=subsets)
    unique = sorted({kept for _, kept in sets}, key=lambda k: (len(k), k))
    index = {kept: i for i, kept in enumerate(unique)}
    keep = np.zeros((len(unique), H), dtype=bool)  # [S, H]
    for i, kept in enumerate(unique):
        keep[i, list(kept)] = True
    keep_d = to_device(keep, device_of(c))
    fill_shift = (fill_eos @ (~keep_d).T.astype(fill_eos.dtype)).astype(c.dtype)  # [M, S]
    M, N = offset.shape
    per_mode = {"zero": [], "mean": []}
    step = max(1, ROW_BYTES // (48 * N * M))
    for i in range(0, len(unique), step):
        kept = xp.einsum("sh,mhn->msn", keep_d[i : i + step].astype(c.dtype), c)  # [M, s, N]
        zero = offset[:, None] + kept  # [M, s, N] (einsum: a broadcast matmul is slow here)
        per_mode["zero"].append(at.metrics(zero))
        mean = at.metrics(zero + fill_shift[:, i : i + step, None], auc=False)  # [M, s]
        mean["roc_auc"] = per_mode["zero"][-1]["roc_auc"]
        per_mode["mean"].append(mean)
    per_mode = {
        mode: {k: np.concatenate([p[k] for p in parts], axis=1) for k in METRICS}
        for mode, parts in per_mode.items()
    }  # mode -> metric -> [M, S]
    results = []
    for m in range(M):
        results.append(
            {
                mode: [
                    {"kind": kind, "kept": list(kept), **_row(per_mode[mode], (m, index[kept]))}
                    for kind, kept in sets
                ]
                for mode in MODES
            }
        )
    return results, per_mode["zero"], index


def _semantics_all(c, offset, at: Positions, zero_metrics, index) -> list[list[dict]]:
    """head_semantics of every member. c [M, H, N], offset [M, N]; solo = the zero-ablation
    row that keeps only head h."""
    M, H = c.shape[:2]
    auc_alone = to_numpy(roc_auc_batched(c, at.labels))  # [M, H]
    scaled = at.metrics(offset[:, None] + H * c)  # [M, H]
    return [
        [
            {
                "head": h,
                "auc_alone": auc_alone[m, h],
                "auc_two_sided": two_sided(float(auc_alone[m, h]))[0],
                "auc_sign": two_sided(float(auc_alone[m, h]))[1],
                "solo": _row(zero_metrics, (m, index[(h,)])),
                "scaled": _row(scaled, (m, h)),
            }
            for h in range(H)
        ]
        for m in range(M)
    ]


def _intervention_scores(tokens, c, base, edits, H: int, xp):
    """(names and heads, scores [M, K, N]) for intervention_list, in its order."""
    total = c.sum(axis=1)  # [M, N] the unedited score less the offset
    rows, runs = [], intervention_list(tokens, H)
    for name, heads, _ in runs:
        if name == "force_w01=1":
            (h,) = heads
            rows.append(base + edits["w01"][:, h] - c[:, h])
        elif name == "force_w02=0":
            (h,) = heads
            rows.append(base + edits["w02"][:, h] - c[:, h])
        elif name == "all_heads_ideal":
            rows.append(base - total + edits["ideal"].sum(axis=1))
        elif name == "mean_values":
            mean = edits["mean"] if "mean" in edits else edits["cross"].mean(axis=2)
            rows.append(base - total + mean.sum(axis=1))
        elif name == "roll_values":
            if "roll" in edits:
                roll = edits["roll"].sum(axis=1)  # [M, N]
            else:
                roll = sum(edits["cross"][:, h, (h + 1) % H] for h in range(H))
            rows.append(base - total + roll)
        elif name == "swap_values":
            i, j = heads
            cross = edits["cross"]  # [M, H, G, N]: head h reading head g's values
            swapped = cross[:, i, j] + cross[:, j, i] - c[:, i] - c[:, j]  # [M, N]
            rows.append(base + swapped)
        else:
            raise ValueError(f"analyze_ensemble does not know the intervention {name!r}")
    return [(name, heads) for name, heads, _ in runs], xp.stack(rows, axis=1)


def _heads_all(c, offset, fill_eos, at: Positions, H: int, subsets: bool):
    """(ablation, semantics) of every member: see _ablation_all and _semantics_all."""
    ablation, zero_metrics, index = _ablation_all(c, offset, fill_eos, at, H, subsets)
    return ablation, _semantics_all(c, offset, at, zero_metrics, index)


def _interventions_all(tokens, c, base_score, edits, at: Positions, H: int) -> list[list[dict]]:
    """intervention_study of every member. c [M, H, N], base_score [M, N] (the model's own
    EOS score), edits: the edited contributions at the real positions."""
    xp = array_module(c)
    runs, scores = _intervention_scores(tokens, c, base_score, edits, H, xp)  # [M, K, N]
    edited = at.metrics(scores)  # [M, K]
    base = at.metrics(base_score)  # [M]
    results = []
    for m in range(c.shape[0]):
        b = _row(base, m)
        rows = [{"name": "none", "heads": [], **b, "delta": {k: b[k] - b[k] for k in METRICS}}]
        for k, (name, heads) in enumerate(runs):
            e = _row(edited, (m, k))
            delta = {key: e[key] - b[key] for key in METRICS}
            rows.append({"name": name, "heads": list(heads), **e, "delta": delta})
        results.append(rows)
    return results


def _attention_all(params, sums: dict, config) -> list[dict]:
    """attention_stats of every member from the summed pattern statistics."""
    measured = {
        "w_01": means_from_sums(np.exp, *(to_numpy(a) for a in sums["w_01"])),
        "w_02": means_from_sums(np.exp, *(to_numpy(a) for a in sums["w_02"])),
        "bos_weight": means_from_sums(None, *(to_numpy(a) for a in sums["bos_weight"])),
    }  # each [M, H, 3]
    exact = not config.pos_emb  # one layer (checked): the table is exact without positions
    if exact:
        e = params["embed.W_E"][:, None]  # [M, 1, V, d_model]
        q = e @ params[param_name("W_Q", 0)]  # [M, H, V, d_head]
        k = e @ params[param_name("W_K", 0)]  # [M, H, V, d_head]
        table = exact_weights((q @ k.swapaxes(-1, -2)) / np.sqrt(config.d_head))  # [M, H, V, V]
        w = {name: table[name] for name in PAIRS}  # [M, H, 3]
    else:
        w = {name: measured[name] for name in PAIRS}
    bos = _row_nanmean(measured["bos_weight"])  # [M, H]
    geo = {name: _geo_mean(w[name]) for name in PAIRS}  # [M, H]
    return [
        {
            "exact": exact,
            "per_query": {
                **{k: v[m].tolist() for k, v in w.items()},
                "bos_weight": measured["bos_weight"][m].tolist(),
            },
            "w_01": geo["w_01"][m].tolist(),
            "w_02": geo["w_02"][m].tolist(),
            "bos_weight": bos[m].tolist(),
            "measured": {name: measured[name][m].tolist() for name in PAIRS},
        }
        for m in range(measured["bos_weight"].shape[0])
    ]


def _contributions_all(c, at: Positions) -> dict:
    """contribution_summary of every member from c [M, H, N]: each value [M, H]."""
    c = to_numpy(c).astype(np.float64)  # [M, H, N]
    y = to_numpy(at.labels)  # [N]
    return {"mean_pos": c[..., y].mean(-1), "mean_neg": c[..., ~y].mean(-1), "std": c.std(-1),
            "sd_pos": c[..., y].std(-1), "sd_neg": c[..., ~y].std(-1)}  # fmt: skip


# ------------------------------------------------------------------------------ all


def analyze_ensemble(
    params: dict,
    tokens,
    targets,
    mask,
    config,
    *,
    subsets: bool = True,
    interventions: bool = True,
    l2: float = 1e-4,
    progress: Progress | None = None,
) -> list[dict]:
    """analyze_model for every member of an ensemble, all members computed together.

    params: an ensemble (a leading [M] on every array); tokens [B, T], targets [B, T, V],
    mask [B, T]: one held-out batch shared by all members (host or device). Returns a list
    of M JSON-ready dicts, entry i equal (up to float rounding) to
    ``analyze_model(minicount.member(params, i), tokens, targets, mask, config, ...)``.
    Raises ValueError for a single model, an empty ensemble, or a config whose heads do not
    add up to the logits (n_layers > 1, layernorm, mlp). ``progress`` (a
    minicount.progress.Progress) is told the total number of pieces of work and advanced as
    each ends.
    """
    M = check_ensemble(params, config)
    xp = array_module(params["embed.W_E"])
    # independent pieces of work, one per thread: they scale with the cores whatever a
    # training step's best thread count is (MINICOUNT_THREADS still sets it)
    n_threads = analysis_threads() if xp is np else 1
    # the work is shared out by model and by chunk instead: BLAS threads would only compete
    with blas_limit(1 if n_threads > 1 else None):
        work = _Work(n_threads, progress)
        return _analyze(params, tokens, targets, mask, config, M, subsets, interventions, l2, work)


def _analyze(params, tokens, targets, mask, config, M, subsets, interventions, l2, work):
    """analyze_ensemble, the pieces run by work."""
    work.expect(4 + len(work.groups(M)) * (4 if interventions else 3))
    H = config.n_heads
    device = device_of(params["embed.W_E"])
    xp = array_module(params["embed.W_E"])
    tokens = to_device(np.asarray(to_numpy(tokens)), device)  # [B, T]
    at = Positions(targets, mask, device)
    run = _forward_all(params, tokens, at.mask, config, interventions, work)
    work.done("the forward pass")
    c, offset = run["c"], run["offset"]  # [M, H, B, T], [M, B, T]
    c_real, offset_real = at.real(c), at.real(offset)  # [M, H, N], [M, N]
    n_real = float(at.mask.sum())
    W_O = params[param_name("W_O", 0)].astype(xp.float64)  # [M, H, d_head, d_model]
    means = (run["z_sum"][..., None, :] @ W_O)[..., 0, :] / n_real  # [M, H, d_model]
    W_U_eos = params["unembed.W_U"][..., EOS].astype(xp.float64)  # [M, d_model]
    fill_eos = (means @ W_U_eos[..., None])[..., 0]  # [M, H]

    # independent pieces, the largest first; the fits by groups of models
    groups = work.groups(M)
    aggregation = [
        work.submit(aggregation_batched, c[a:b], offset[a:b], targets, mask, l2=l2)
        for a, b in groups
    ]
    linear = [
        work.submit(linear_fit_batched, c[a:b], offset[a:b], targets, mask, l2=l2)
        for a, b in groups
    ]
    heads = [
        work.submit(_heads_all, c_real[a:b], offset_real[a:b], fill_eos[a:b], at, H, subsets)
        for a, b in groups
    ]
    if interventions:
        edits = {k: at.real(xp.moveaxis(v, -1, 2) if k == "cross" else v)
                 for k, v in run["edits"].items()}  # [M, H, N] (cross: [M, H, G, N])  # fmt: skip
        base_score = at.real(run["logits"][..., EOS])  # [M, N]
        edited = [
            work.submit(
                _interventions_all, tokens, c_real[a:b], base_score[a:b],
                {k: v[a:b] for k, v in edits.items()}, at, H,
            )
            for a, b in groups
        ]  # fmt: skip
    metrics = work.submit(_top_metrics, run["logits"], targets, mask, at)  # each [M]
    attention = _attention_all(params, run["attention"], config)
    work.done("attention statistics")
    summary = _contributions_all(c_real, at)
    work.done("head contributions")
    metrics = work.wait([metrics], "metrics")[0]
    heads = work.wait(heads, "ablation and semantics")
    ablation = [row for part in heads for row in part[0]]
    semantics = [row for part in heads for row in part[1]]
    aggregation = [row for part in work.wait(aggregation, "aggregation fits") for row in part]
    linear = [row for part in work.wait(linear, "linear fits") for row in part]
    if interventions:
        edited = [row for part in work.wait(edited, "interventions") for row in part]
    parts = {"metrics": metrics, "attention": attention, "ablation": ablation,
             "semantics": semantics, "contributions": summary, "aggregation": aggregation,
             "linear": linear, "interventions": edited if interventions else None}  # fmt: skip
    return [_member_result(config, parts, m) for m in range(M)]


def _member_result(config, parts: dict, m: int) -> dict:
    """Member m's JSON-ready result, in analyze_model's layout, from the batched parts."""
    out = {
        "config": config.to_dict(),
        "metrics": {k: v[m] for k, v in parts["metrics"].items()},
        "exact": True,
        "exact_problem": None,
        "attention": parts["attention"][m],
        "ablation": parts["ablation"][m],
        "semantics": parts["semantics"][m],
        "contributions": {k: v[m] for k, v in parts["contributions"].items()},
        "aggregation": parts["aggregation"][m],
        "linear": parts["linear"][m],
    }
    if parts["interventions"] is not None:
        out["interventions"] = parts["interventions"][m]
    return jsonable(out)


def check_logits_finite(params: dict, tokens, config, member: int) -> None:
    """Refuse a model whose (finite but huge) weights overflow its logits: the instruments'
    least-squares fits would fail inside LAPACK."""
    with np.errstate(all="ignore"):
        logits = forward(params, tokens[:64], config)
    if not np.isfinite(logits).all():
        raise ValueError(f"model {member}'s logits overflow (weights too large); cannot analyse it")


def analyze_members(models: list, chosen, tokens, targets, mask, config, device: str) -> list:
    """The analyses of models[i] for i in chosen (single models on the host), on device:
    all in one pass (analyze_ensemble) when the direct decomposition is exact, else model by
    model (analyze_model); with a progress line on stderr. Refuses a model whose logits
    overflow."""
    for i in chosen:
        check_logits_finite(models[i], tokens, config, i)
    if exactness_problem(config) is None:  # every chosen member in one pass
        stacked = to_device(stack([models[i] for i in chosen]), device)
        with Progress(0, unit="piece", desc="analysis") as bar:
            return analyze_ensemble(stacked, tokens, targets, mask, config, progress=bar)
    analyses = []
    with Progress(len(chosen), unit="model", desc="analysis, model by model") as bar:
        for i in chosen:
            model = to_device(models[i], device)
            analyses.append(analyze_model(model, tokens, targets, mask, config))
            bar.advance(1)
    return analyses
