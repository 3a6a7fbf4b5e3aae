"""Causal attention with its core fused into one CUDA kernel (CuPy): the GPU fast path.

On a GPU the fast path (fast/attention.py) writes the [..., B, H, T, T] scores and pattern
to memory and reads them back a dozen times; for an ensemble of 1,024 models each of
those arrays is 4.6 GB, and the passes over them are most of a step. Here steps 2 to 4 of
the forward (scores, causal softmax, z = pattern @ v) run as one kernel with one thread
block per (model, string, head): q, k and v of one head sit in shared memory, each thread
walks over the keys of one query with an online softmax, and only z and the log-sum-exp
of each row are written. The backward recomputes the pattern from q, k and that
log-sum-exp (as FlashAttention does) and gives dq, dk, dv in one more kernel.

Steps 1 and 5 (the projections) are the plain ones, written out again below.
tests/test_fast_paths.py checks this module against the textbook layers/attention.py (the
glue on the CPU with NumPy stand-ins for the kernels, the kernels themselves on a GPU).

The model runs it when asked (``attention="fused"``; ``TrainConfig.path="fused"``, the
``--fused-kernel`` option). Where the kernel cannot run, ``attention_forward`` says so by
taking the fast path instead (``applies``): NumPy arrays, hooks (which need the scores
and pattern that the kernel never writes), or a T * d_head too big for shared memory.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import array_module
from ..layers.shapes import merge_heads, rows, split_heads, unrows
from . import attention as fast_attention

_SOURCE = r"""
// REAL (float or double), EXP, LOG and D (d_head) are #defined in front of this source.
// q, k, v, z, dz, dq, dk, dv: [N, T, D] contiguous; lse: [N, T]; one block per n.

extern "C" __global__ void causal_attention_forward(
    const REAL* __restrict__ q, const REAL* __restrict__ k, const REAL* __restrict__ v,
    REAL* __restrict__ z, REAL* __restrict__ lse, const int T, const REAL scale)
{
    extern __shared__ double shared[];  // dynamic shared memory, 8-byte aligned
    REAL* ks = (REAL*)shared;  // [T, D]
    REAL* vs = ks + T * D;     // [T, D]
    const long long base = (long long)blockIdx.x * T * D;
    for (int i = threadIdx.x; i < T * D; i += blockDim.x) {
        ks[i] = k[base + i];
        vs[i] = v[base + i];
    }
    __syncthreads();
    for (int t = threadIdx.x; t < T; t += blockDim.x) {  // one query per thread
        REAL qt[D], acc[D];
        for (int d = 0; d < D; ++d) qt[d] = q[base + t * D + d] * scale;
        // key 0 is always visible: start the online softmax with it
        REAL m = 0;
        for (int d = 0; d < D; ++d) m += qt[d] * ks[d];
        REAL l = 1;
        for (int d = 0; d < D; ++d) acc[d] = vs[d];
        for (int j = 1; j <= t; ++j) {
            REAL s = 0;
            for (int d = 0; d < D; ++d) s += qt[d] * ks[j * D + d];
            const REAL m_new = s > m ? s : m;
            const REAL c = EXP(m - m_new), p = EXP(s - m_new);
            l = l * c + p;
            for (int d = 0; d < D; ++d) acc[d] = acc[d] * c + p * vs[j * D + d];
            m = m_new;
        }
        for (int d = 0; d < D; ++d) z[base + t * D + d] = acc[d] / l;
        lse[(long long)blockIdx.x * T + t] = m + LOG(l);
    }
}

extern "C" __global__ void causal_attention_backward(
    const REAL* __restrict__ q, const REAL* __restrict__ k, const REAL* __restrict__ v,
    const REAL* __restrict__ z, const REAL* __restrict__ lse, const REAL* __restrict__ dz,
    REAL* __restrict__ dq, REAL* __restrict__ dk, REAL* __restrict__ dv,
    const int T, const REAL scale)
{
    extern __shared__ double shared[];  // dynamic shared memory, 8-byte aligned
    REAL* qs = (REAL*)shared;  // [T, D] q * scale
    REAL* ks = qs + T * D;     // [T, D]
    REAL* vs = ks + T * D;     // [T, D]
    REAL* dzs = vs + T * D;    // [T, D]
    REAL* lses = dzs + T * D;  // [T]
    REAL* dots = lses + T;     // [T] dz_t . z_t
    const long long base = (long long)blockIdx.x * T * D;
    for (int i = threadIdx.x; i < T * D; i += blockDim.x) {
        qs[i] = q[base + i] * scale;
        ks[i] = k[base + i];
        vs[i] = v[base + i];
        dzs[i] = dz[base + i];
    }
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        REAL s = 0;
        for (int d = 0; d < D; ++d) s += dz[base + t * D + d] * z[base + t * D + d];
        dots[t] = s;
        lses[t] = lse[(long long)blockIdx.x * T + t];
    }
    __syncthreads();
    // pattern[t, j] = exp(qs_t . k_j - lse_t); dscores[t, j] = pattern * (dz_t . v_j - dots_t)
    for (int t = threadIdx.x; t < T; t += blockDim.x) {  // dq[t] = scale sum_j dscores[t, j] k_j
        REAL acc[D];
        for (int d = 0; d < D; ++d) acc[d] = 0;
        for (int j = 0; j <= t; ++j) {
            REAL s = 0, dp = 0;
            for (int d = 0; d < D; ++d) {
                s += qs[t * D + d] * ks[j * D + d];
                dp += dzs[t * D + d] * vs[j * D + d];
            }
            const REAL ds = EXP(s - lses[t]) * (dp - dots[t]);
            for (int d = 0; d < D; ++d) acc[d] += ds * ks[j * D + d];
        }
        for (int d = 0; d < D; ++d) dq[base + t * D + d] = acc[d] * scale;
    }
    for (int j = threadIdx.x; j < T; j += blockDim.x) {  // dk[j], dv[j]: sums over queries t >= j
        REAL ak[D], av[D];
        for (int d = 0; d < D; ++d) ak[d] = av[d] = 0;
        for (int t = j; t < T; ++t) {
            REAL s = 0, dp = 0;
            for (int d = 0; d < D; ++d) {
                s += qs[t * D + d] * ks[j * D + d];
                dp += dzs[t * D + d] * vs[j * D + d];
            }
            const REAL p = EXP(s - lses[t]);
            const REAL ds = p * (dp - dots[t]);
            for (int d = 0; d < D; ++d) {
                ak[d] += ds * qs[t * D + d];
                av[d] += p * dzs[t * D + d];
            }
        }
        for (int d = 0; d < D; ++d) {
            dk[base + j * D + d] = ak[d];
            dv[base + j * D + d] = av[d];
        }
    }
}
"""

MAX_SHARED_BYTES = 48 * 1024  # what a block may use without opting in to more


def applies(x, hooks, d_head: int) -> bool:
    """Whether the kernel can take this call: CuPy arrays, no hooks, shared memory enough."""
    if hooks or type(x).__module__.split(".")[0] != "cupy":
        return False
    T = x.shape[-2]
    return (4 * T * d_head + 2 * T) * x.dtype.itemsize <= MAX_SHARED_BYTES


@functools.cache
def _kernels(real: str, d_head: int):
    """The two kernels compiled for one dtype ('float' or 'double') and d_head (cached)."""
    import cupy

    exp, log = ("expf", "logf") if real == "float" else ("exp", "log")
    defines = f"#define REAL {real}\n#define EXP {exp}\n#define LOG {log}\n#define D {d_head}\n"
    module = cupy.RawModule(code=defines + _SOURCE)
    return (
        module.get_function("causal_attention_forward"),
        module.get_function("causal_attention_backward"),
    )


def _launch_shape(N: int, T: int):
    threads = min(256, 32 * math.ceil(T / 32))  # whole warps, one thread per query
    return (N,), (threads,)


def _real(dtype):
    return {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]


def core_forward(q, k, v, scale: float):
    """z [..., T, d_head] and lse [..., T] from q, k, v [..., T, d_head] (contiguous)."""
    import cupy

    *lead, T, d_head = q.shape
    N = int(np.prod(lead))
    z = cupy.empty_like(q)
    lse = cupy.empty(q.shape[:-1], dtype=q.dtype)
    forward, _ = _kernels(_real(q.dtype), d_head)
    grid, block = _launch_shape(N, T)
    forward(
        grid,
        block,
        (q, k, v, z, lse, np.int32(T), q.dtype.type(scale)),
        shared_mem=2 * T * d_head * q.dtype.itemsize,
    )
    return z, lse


def core_backward(q, k, v, z, lse, dz, scale: float):
    """dq, dk, dv [..., T, d_head] from dz (all contiguous) and the forward's z and lse."""
    import cupy

    *lead, T, d_head = q.shape
    N = int(np.prod(lead))
    dq, dk, dv = cupy.empty_like(q), cupy.empty_like(k), cupy.empty_like(v)
    _, backward = _kernels(_real(q.dtype), d_head)
    grid, block = _launch_shape(N, T)
    backward(
        grid,
        block,
        (q, k, v, z, lse, dz, dq, dk, dv, np.int32(T), q.dtype.type(scale)),
        shared_mem=(4 * T * d_head + 2 * T) * q.dtype.itemsize,
    )
    return dq, dk, dv


def attention_forward(x, W_Q, W_K, W_V, W_O, hooks=None, core=None):
    """As layers.attention_forward, with steps 2-4 in the fused kernel where it ``applies``
    (else the whole call is fast/attention.py's).

    ``core`` computes steps 2-4; a stand-in (for instance in NumPy) runs whatever the arrays
    are, which lets the tests check this glue on the CPU.
    """
    if core is None:
        if not applies(x, hooks, W_Q.shape[-1]):
            return fast_attention.attention_forward(x, W_Q, W_K, W_V, W_O, hooks=hooks)
        core = core_forward
    xp = array_module(x)

    B, T = x.shape[-3:-1]
    H, d_model, d_head = W_Q.shape[-3:]
    x_rows = rows(x)  # [..., B*T, d_model]
    # 1. [q, k, v] = x @ [W_Q, W_K, W_V], each [..., B, H, T, d_head]
    W_QKV = xp.concatenate(
        [fast_attention.heads_as_matrix(W) for W in (W_Q, W_K, W_V)], axis=-1
    )  # [..., d_model, 3*H*d_head]
    q, k, v = (split_heads(y, B, T, H) for y in xp.split(x_rows @ W_QKV, 3, axis=-1))
    # 2-4. z = softmax(causal(q kᵀ / sqrt(d_head))) @ v, fused
    scale = 1.0 / math.sqrt(d_head)
    z, lse = core(q, k, v, scale)  # [..., B, H, T, d_head], [..., B, H, T]
    # 5. out = merge_heads(z) @ W_O
    z_rows = merge_heads(z)  # [..., B*T, H*d_head]
    W_O_rows = W_O.reshape(*W_O.shape[:-3], H * d_head, d_model)  # [..., H*d_head, d_model]
    out = unrows(z_rows @ W_O_rows, B, T)
    cache = {
        "fused": True,
        "x_rows": x_rows,
        "q": q,
        "k": k,
        "v": v,
        "z": z,
        "lse": lse,
        "z_rows": z_rows,
        "W_QKV": W_QKV,
        "W_O_rows": W_O_rows,
        "scale": scale,
    }
    return out, cache


def attention_backward(dout, cache, core=core_backward):
    """As layers.attention_backward, for a cache made by this module's attention_forward
    (a cache of the fast path, where the kernel did not apply, goes to its backward)."""
    if not cache.get("fused"):
        return fast_attention.attention_backward(dout, cache)
    xp = array_module(dout)

    x_rows, q, k, v, z, lse = (cache[n] for n in ("x_rows", "q", "k", "v", "z", "lse"))
    z_rows, W_QKV, W_O_rows = cache["z_rows"], cache["W_QKV"], cache["W_O_rows"]
    B, H, T, d_head = q.shape[-4:]
    dout_rows = rows(dout)  # [..., B*T, d_model]
    # 5. out = z_rows @ W_O
    dW_O = (z_rows.swapaxes(-1, -2) @ dout_rows).reshape(W_O_rows.shape[:-2] + (H, d_head, -1))
    dz = split_heads(dout_rows @ W_O_rows.swapaxes(-1, -2), B, T, H)  # [..., B, H, T, d_head]
    # 4-2. fused: dq, dk, dv from dz, recomputing the pattern
    dq, dk, dv = core(q, k, v, z, lse, dz, cache["scale"])
    # 1. [q, k, v] = x @ W_QKV
    dqkv_rows = xp.concatenate([merge_heads(g) for g in (dq, dk, dv)], axis=-1)  # [.., B*T, 3HD]
    dW_QKV = x_rows.swapaxes(-1, -2) @ dqkv_rows  # [..., d_model, 3*H*d_head]
    dx_rows = dqkv_rows @ W_QKV.swapaxes(-1, -2)  # [..., B*T, d_model]
    HD = H * d_head
    dW_Q, dW_K, dW_V = (
        fast_attention.matrix_as_heads(dW_QKV[..., i * HD : (i + 1) * HD], H) for i in range(3)
    )  # each [..., H, d_model, d_head]
    return unrows(dx_rows, B, T), dW_Q, dW_K, dW_V, dW_O
