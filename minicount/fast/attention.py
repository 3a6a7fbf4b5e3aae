"""Causal attention rearranged for speed (NumPy or CuPy): the fast path of layers/attention.py.

It computes what the textbook version (minicount/layers/attention.py) computes, with the
same hooks, and tests/test_fast_paths.py checks outputs, hooked activations and gradients
against it. The model takes this path when asked (``attention="fast"``; training does by
default, see TrainConfig.path). The README's Performance section measures each trick.

The [..., B, H, T, T] arrays (scores, pattern and their gradients) are the only big ones,
so the code passes over them as few times as it can: the 1/sqrt(d_head) scale is applied
to the small q instead, the softmax skips the row maximum when it can and normalises in
place, and the backward uses Σ_j dpattern·pattern = dz·z (a [..., T] dot of small arrays)
instead of a pass over [T, T]. The three projections are one matmul with W_Q, W_K, W_V
side by side, computed transposed so that every head's q, k, v is a view
(heads_of_columns): NumPy copies arrays with a last axis of 8 slowly, and this layout
needs no such copy. ``hook_result`` is computed only when hooked.

Pure array code: it writes only into arrays it allocates itself.
"""

import math

from ..backend import array_module
from ..layers.attention import causal_mask, softmax
from ..layers.shapes import rows, unrows

# exp(x) stays a normal float32 for |x| < 87, so scores inside ±SHIFT_FREE need no shift
SHIFT_FREE = 80.0


def heads_as_matrix(W):
    """[..., H, d_model, d_head] -> [..., d_model, H*d_head]: the heads side by side."""
    H, d_model, d_head = W.shape[-3:]
    return W.swapaxes(-3, -2).reshape(*W.shape[:-3], d_model, H * d_head)


def matrix_as_heads(M, H):
    """The inverse of heads_as_matrix: [..., d_model, H*d_head] -> [..., H, d_model, d_head]."""
    d_model = M.shape[-2]
    return M.reshape(*M.shape[:-2], d_model, H, -1).swapaxes(-3, -2)


def heads_of_columns(y_cols, B, T, H):
    """[..., H*d_head, B*T] -> [..., B, H, T, d_head], a view (no copy).

    y_cols holds one column per position: the transposed layout that ``W.T @ x_rows.T``
    produces. Each (string, head) matrix [T, d_head] is then a strided view that matmul
    takes as it is, so q, k, v and their gradients never need a transposing copy.
    """
    y = y_cols.reshape(*y_cols.shape[:-2], H, -1, B, T)  # [..., H, d_head, B, T]
    n = y.ndim
    return y.transpose(*range(n - 4), n - 2, n - 4, n - 1, n - 3)


def columns_of_heads(y):
    """The inverse of heads_of_columns: [..., B, H, T, d_head] -> [..., H*d_head, B*T].

    Free (a view) for an array made by heads_of_columns, a copy for any other.
    """
    B, H, T, d_head = y.shape[-4:]
    n = y.ndim
    y = y.transpose(*range(n - 4), n - 3, n - 1, n - 4, n - 2)  # [..., H, d_head, B, T]
    return y.reshape(*y.shape[:-4], H * d_head, B * T)


def matmul_into(a, b, out):
    """out[...] = a @ b, for an ``out`` laid out by heads_of_columns.

    NumPy's matmul writes straight into an output whose rows are contiguous, as outᵀ's
    are, so it computes outᵀ = bᵀ @ aᵀ; CuPy simply copies the product in.
    """
    xp = array_module(a)
    if xp.__name__ == "numpy":
        xp.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2), out=out.swapaxes(-1, -2))
    else:
        out[...] = a @ b


def shift_free(scores) -> bool:
    """True when every score lies strictly within ±SHIFT_FREE, so that exp(scores) needs no
    shift; False for inf or nan. Both extremes are reduced where the scores are and read
    back as one number: one host sync on a GPU. The one test of this guard (the softmaxes
    here and the analysis's edited attention use it)."""
    xp = array_module(scores)
    return bool(xp.maximum(scores.max(), -scores.min()) < SHIFT_FREE)


def causal_softmax(scores):
    """pattern [..., T, T]: softmax over keys j <= t of scores[..., t, j]; later keys get 0.

    Equal to softmax(where(causal_mask, scores, -inf)). Softmax does not change when a row
    is shifted, and the shift only guards exp against overflow, so when every score lies
    within ±SHIFT_FREE (the usual case) exp is taken directly and the mask multiplies it;
    this skips a max over the short last axis, the slowest pass over [T, T] in NumPy.
    """
    xp = array_module(scores)
    T = scores.shape[-1]
    if not shift_free(scores):
        return softmax(xp.where(causal_mask(T, xp), scores, -xp.inf))
    pattern = xp.exp(scores)  # [..., T, T]
    pattern *= causal_mask(T, xp, scores.dtype)
    row_sums = xp.einsum("...tj->...t", pattern)  # [..., T] (einsum: faster than .sum here)
    pattern *= (1.0 / row_sums)[..., None]
    return pattern


def attention_forward(x, W_Q, W_K, W_V, W_O, hooks=None):
    """x [..., B, T, d_model]; W_Q/W_K/W_V [..., H, d_model, d_head]; W_O [..., H, d_head, d_model].

    As layers.attention_forward. Returns out [..., B, T, d_model] and the cache (a dict of
    named activations, laid out for this module's attention_backward).
    """
    xp = array_module(x)
    hooks = hooks or {}
    hook = lambda name, a: hooks[name](a) if name in hooks else a  # noqa: E731
    B, T = x.shape[-3:-1]
    H, d_head = W_Q.shape[-3], W_Q.shape[-1]
    x_rows = rows(x)  # [..., B*T, d_model]

    # 1. project every position to queries, keys and values, all heads in one matmul
    #    (computed transposed, one column per position: see heads_of_columns)
    W_QKV = xp.concatenate([heads_as_matrix(W) for W in (W_Q, W_K, W_V)], axis=-1)
    # W_QKV: [..., d_model, 3*H*d_head]
    qkv_cols = W_QKV.swapaxes(-1, -2) @ x_rows.swapaxes(-1, -2)  # [..., 3*H*d_head, B*T]
    qkv = heads_of_columns(qkv_cols, B, T, 3 * H)  # [..., B, 3*H, T, d_head]
    q = hook("hook_q", qkv[..., :H, :, :])  # [..., B, H, T, d_head]
    k = hook("hook_k", qkv[..., H : 2 * H, :, :])
    v = hook("hook_v", qkv[..., 2 * H :, :, :])

    # 2. scores: how much each query t matches each key j
    scale = 1.0 / math.sqrt(d_head)
    scores = hook("hook_attn_scores", (q * scale) @ k.swapaxes(-1, -2))  # [..., B, H, T, T]

    # 3. causal mask and softmax over keys: pattern[t, j] = weight of key j for query t
    pattern = hook("hook_pattern", causal_softmax(scores))  # [..., B, H, T, T], rows sum to 1

    # 4. mix the values
    z = heads_of_columns(xp.empty(x_rows.shape[:-2] + (H * d_head, B * T), x.dtype), B, T, H)
    matmul_into(pattern, v, out=z)  # [..., B, H, T, T] @ [..., B, H, T, d_head] -> z
    z = hook("hook_z", z)

    # 5. project back to the residual stream and sum over heads
    z_cols = columns_of_heads(z)  # [..., H*d_head, B*T]
    W_O_rows = W_O.reshape(*W_O.shape[:-3], H * d_head, W_O.shape[-1])  # [..., H*d_head, d_model]
    if "hook_result" in hooks:
        # each head's own output, [..., B, H, T, d_model]; then the same sum, head by head
        result = hook("hook_result", z @ W_O[..., None, :, :, :])
        out = result.sum(axis=-3)  # [..., B, T, d_model]
    else:
        # [..., B*T, H*d_head] @ [..., H*d_head, d_model] -> [..., B*T, d_model]
        out = unrows(z_cols.swapaxes(-1, -2) @ W_O_rows, B, T)

    cache = {
        "x_rows": x_rows, "q": q, "k": k, "v": v, "pattern": pattern, "z": z, "z_cols": z_cols,
        "W_QKV": W_QKV, "W_O_rows": W_O_rows,
    }  # fmt: skip
    return out, cache


def attention_backward(dout, cache):
    """(dx, dW_Q, dW_K, dW_V, dW_O) from dout [..., B, T, d_model]; steps in reverse order."""
    xp = array_module(dout)
    x_rows, q, k, v, pattern, z = (cache[n] for n in ("x_rows", "q", "k", "v", "pattern", "z"))
    z_cols, W_QKV, W_O_rows = cache["z_cols"], cache["W_QKV"], cache["W_O_rows"]
    B, H, T, d_head = q.shape[-4:]
    dout_rows = rows(dout)  # [..., B*T, d_model]

    # 5. in the forward pass this was: out = z_rows @ W_O (z_rows = z_colsᵀ), so now we have:
    dW_O = (z_cols @ dout_rows).reshape(W_O_rows.shape[:-2] + (H, d_head, -1))  # [.., H, d_head, d]
    dz_cols = W_O_rows @ dout_rows.swapaxes(-1, -2)  # [..., H*d_head, B*T]: (dout @ W_Oᵀ)ᵀ
    dz = heads_of_columns(dz_cols, B, T, H)  # [..., B, H, T, d_head]

    # dq, dk, dv are written side by side, in the layout of the forward's qkv_cols
    dqkv_cols = xp.empty(x_rows.shape[:-2] + (3 * H * d_head, B * T), dtype=x_rows.dtype)
    dqkv = heads_of_columns(dqkv_cols, B, T, 3 * H)  # [..., B, 3*H, T, d_head]
    dq, dk, dv = dqkv[..., :H, :, :], dqkv[..., H : 2 * H, :, :], dqkv[..., 2 * H :, :, :]

    # 4. z = pattern @ v
    dpattern = dz @ v.swapaxes(-1, -2)  # [..., B, H, T, T]
    matmul_into(pattern.swapaxes(-1, -2), dz, out=dv)  # [..., B, H, T, d_head]

    # 3. pattern = softmax(scores): dscores = pattern * (dpattern - Σ_j dpattern * pattern),
    #    where Σ_j dpattern[t, j] pattern[t, j] = Σ_j (dz_t · v_j) pattern[t, j] = dz_t · z_t;
    #    masked keys have pattern 0, so their score gets no gradient. (In place on dpattern.)
    dz_dot_z = xp.einsum("...td,...td->...t", dz, z)  # [..., B, H, T]
    dscores = dpattern
    dscores -= dz_dot_z[..., None]
    dscores *= pattern  # [..., B, H, T, T]

    # 2. scores = (q / sqrt(d_head)) @ kᵀ
    scale = 1.0 / math.sqrt(d_head)
    matmul_into(dscores, k, out=dq)
    dq *= scale  # [..., B, H, T, d_head]
    matmul_into(dscores.swapaxes(-1, -2), q, out=dk)
    dk *= scale  # [..., B, H, T, d_head]

    # 1. [q, k, v] = x @ [W_Q, W_K, W_V]; x fans out to all three, so its gradients add up,
    #    which the one matmul with the stacked gradients does
    dW_QKV = (dqkv_cols @ x_rows).swapaxes(-1, -2)  # [..., d_model, 3*H*d_head], as its transpose
    dx_rows = dqkv_cols.swapaxes(-1, -2) @ W_QKV.swapaxes(-1, -2)  # [..., B*T, d_model]
    HD = H * d_head
    dW_Q, dW_K, dW_V = (matrix_as_heads(dW_QKV[..., i * HD : (i + 1) * HD], H) for i in range(3))
    return unrows(dx_rows, B, T), dW_Q, dW_K, dW_V, dW_O
