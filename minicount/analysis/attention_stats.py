"""Attention statistics per head and query token (docs/method.md §4): w_01, w_02 and the
weight on BOS.

    w_ab(q) = (mean weight on one key of token b) / (mean weight on one key of token a)

for a query holding token q: w_01 ≈ 1 balances 1s against 0s (what counting needs),
w_02 ≪ 1 suppresses the 2s. Without positional embeddings, in the first layer, a score
depends only on (query token, key token): S[h, q, k] = (e_q W_Q[h]) · (e_k W_K[h]) / √d_head,
so w_ab(q) = exp(S[h, q, b] − S[h, q, a]) exactly. Otherwise (or to check the table) they are
measured from the attention patterns: for every real query position, the ratio of the mean
weight per key of token b to that per key of token a over the keys it sees (both present),
averaged over positions in log space (a geometric mean; with NoPE every ratio equals the exact
value, so the two agree). The weight on BOS depends on the whole prefix, so it is always
measured: the mean attention on the BOS key over the real query positions of token q.

Pure array code: reads its inputs, returns new arrays and dicts.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..backend import array_module, to_numpy
from ..data import BOS, ONE, TWO, ZERO, V
from ..layers import layernorm_forward
from ..names import param_name
from .hooks import check_single
from .patterns import attention_patterns

QUERY_TOKENS = (ZERO, ONE, TWO)  # the symbols; BOS only ever sees itself, EOS is never read
PAIRS = {"w_01": (ZERO, ONE), "w_02": (ZERO, TWO)}


def score_table_problem(config, layer: int = 0) -> str | None:
    """Why attention scores are not a function of (query token, key token), or None."""
    if layer != 0:
        return f"layer {layer} reads the output of earlier layers"
    if config.pos_emb:
        return "positional embeddings make scores depend on positions"
    return None


def score_table(params: dict, config, *, layer: int = 0):
    """S [n_heads, V, V]: the pre-softmax score of a query token (row) for a key token (column).

    Exact for the first layer of a model without positional embeddings (raises ValueError
    otherwise); LayerNorm, if on, acts on each token's embedding alone and is applied.
    """
    check_single(params)
    problem = score_table_problem(config, layer)
    if problem is not None:
        raise ValueError(f"no exact score table: {problem}")
    W = lambda name: params[param_name(name, layer)]  # noqa: E731
    e = params[param_name("W_E")]  # [V, d_model]
    if config.layernorm:
        e = layernorm_forward(e[None], W("ln1.w"), W("ln1.b"))[0][0]  # [V, d_model]
    q = e @ W("W_Q")  # [V, d_model] @ [H, d_model, d_head] -> [H, V, d_head]
    k = e @ W("W_K")  # [H, V, d_head]
    return (q @ k.swapaxes(-1, -2)) / math.sqrt(config.d_head)  # [H, V, V]


def exact_weights(S) -> dict:
    """{"w_01", "w_02", "w_0bos"}: each [..., n_heads, 3] over the query tokens 0, 1, 2, from
    S [..., n_heads, V, V]."""
    S = np.asarray(to_numpy(S), dtype=np.float64)  # [..., H, V, V]
    q = list(QUERY_TOKENS)
    out = {name: np.exp(S[..., q, b] - S[..., q, a]) for name, (a, b) in PAIRS.items()}
    out["w_0bos"] = np.exp(S[..., q, BOS] - S[..., q, ZERO])
    return out


def measured_weights(pattern, tokens, mask) -> dict:
    """{"w_01", "w_02", "bos_weight"}: each [n_heads, 3] over the query tokens 0, 1, 2.

    pattern [B, H, T, T] (one layer), tokens [B, T], mask [B, T]; host or device arrays.
    An entry is nan where no query of that token sees both key tokens (or, for BOS, no BOS).
    """
    A = np.asarray(to_numpy(pattern), dtype=np.float64)  # [B, H, T, T]
    tok = np.asarray(to_numpy(tokens))  # [B, T]
    real = np.asarray(to_numpy(mask), dtype=bool)  # [B, T]
    one_hot = ((tok[..., None] == np.arange(V)) & real[..., None]).astype(np.float64)  # [B, T, V]
    # total weight on the keys of each token: [B, H, T, T] @ [B, 1, T, V] -> [B, H, T, V]
    on_token = A @ one_hot[:, None]
    seen = np.cumsum(one_hot, axis=1)[:, None]  # [B, 1, T, V] keys of each token at or before t
    with np.errstate(divide="ignore", invalid="ignore"):
        per_key = on_token / seen  # [B, H, T, V] mean weight on one key of each token
        out = {}
        for name, (a, b) in PAIRS.items():
            log_ratio = np.log(per_key[..., b]) - np.log(per_key[..., a])  # [B, H, T]
            ok = (seen[..., a] > 0) & (seen[..., b] > 0)  # [B, 1, T]
            out[name] = _mean_by_query(np.exp, log_ratio, ok, tok, real)
        out["bos_weight"] = _mean_by_query(None, on_token[..., BOS], seen[..., BOS] > 0, tok, real)
    return out


def query_sums(values, ok, tok, real):
    """Sums of values [..., B, H, T] over the real positions of each query token where ok
    [B, 1, T], and how many positions each sum has: (sums [..., H, 3], counts [3]).

    Positions left out may hold nan or inf: they are replaced by 0, not multiplied by it.
    """
    xp = array_module(values)
    sums, counts = [], []
    for q in QUERY_TOKENS:
        sel = ok & ((tok == q) & real)[:, None]  # [B, 1, T]
        sums.append(xp.where(sel, values, 0.0).sum(axis=(-3, -1)))  # [..., H]
        counts.append(sel.sum())
    return xp.stack(sums, axis=-1), xp.stack(counts)  # [..., H, 3], [3]


def means_from_sums(link, sums, counts):
    """sums [..., H, 3] / counts [3] (nan where a count is 0), then ``link`` if given."""
    xp = array_module(sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = xp.where(counts > 0, sums / xp.maximum(counts, 1), xp.nan)  # [..., H, 3]
    return link(mean) if link is not None else mean


def _mean_by_query(link, values, ok, tok, real):
    """Average values [B, H, T] over the real positions of each query token (where ok), -> [H, 3].

    With link = np.exp the average is taken of the logs (a geometric mean of the ratios)."""
    return means_from_sums(link, *query_sums(values, ok, tok, real))


def _row_nanmean(x) -> np.ndarray:
    """Mean of each row of [..., H, k] ignoring nan; nan for a row with no number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-1)


def _geo_mean(w) -> np.ndarray:
    """Per head, the geometric mean of [..., H, 3] ratios over the query tokens (nan ignored)."""
    with np.errstate(divide="ignore"):
        return np.exp(_row_nanmean(np.log(np.asarray(w, dtype=np.float64))))


def attention_stats(params: dict, tokens, mask, config, *, layer: int = 0) -> dict:
    """w_01, w_02 and the BOS weight of every head in ``layer``.

    tokens [B, T] (on the parameters' device), mask [B, T]. Returns
        {"exact": bool (w_01, w_02 from the score table),
         "per_query": {"w_01", "w_02", "bos_weight"}: [H][3] lists over query tokens 0, 1, 2,
         "w_01", "w_02", "bos_weight": [H] per head (geometric mean of the ratios,
                                        arithmetic mean of the BOS weight, over query tokens),
         "measured": {"w_01", "w_02"}: [H][3] from the patterns (always given)}
    """
    check_single(params)
    pattern = attention_patterns(params, tokens, config)[layer]  # [B, H, T, T]
    measured = measured_weights(pattern, tokens, mask)
    exact = score_table_problem(config, layer) is None
    if exact:
        table = exact_weights(score_table(params, config, layer=layer))
        w = {name: table[name] for name in PAIRS}
    else:
        w = {name: measured[name] for name in PAIRS}
    bos = _row_nanmean(measured["bos_weight"])  # [H]
    return {
        "exact": exact,
        "per_query": {
            **{k: v.tolist() for k, v in w.items()},
            "bos_weight": measured["bos_weight"].tolist(),
        },
        "w_01": _geo_mean(w["w_01"]).tolist(),
        "w_02": _geo_mean(w["w_02"]).tolist(),
        "bos_weight": bos.tolist(),
        "measured": {name: measured[name].tolist() for name in PAIRS},
    }
