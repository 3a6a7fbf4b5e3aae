"""Side-by-side benchmark: minicount (NumPy / CuPy) against PyTorch and JAX (CPU / CUDA).

    python bench/bench.py                       # CPU rows (NumPy and PyTorch CPU)
    python bench/bench.py --device gpu --json out.json   # GPU rows (CuPy and PyTorch CUDA)
    python bench/bench.py --device all --quick  # everything, fewer repeats
    python -m minicount bench ...               # the same, from a source checkout

Times, in one process on one machine, the default model of the study (docs/method.md §2: B = 256
strings of up to 32 symbols, T = 33 with BOS, d_model 32, 4 heads x d_head 8, one
attention-only layer, float32):

- a training step: forward, backward and AdamW; and forward + backward alone;
- ensembles of M models in one step (M = 1, 4, 16 on the CPU; 1, 16, 256, 1024 on a GPU),
  PyTorch running the same batched computation (bmm over a model axis, one SDPA call);
- sampling one batch of training data; peak memory of a step.

The peers, each optional (a missing one is reported, and its rows skipped):

- PyTorch eager, written as a PyTorch user would: nn.Embedding, one fused QKV nn.Linear,
  F.scaled_dot_product_attention(is_causal=True), torch.optim.AdamW;
- the same model under torch.compile (inductor; forward and backward compiled);
- JAX: jit of value_and_grad of the same loss (vmap over the model axis for ensembles)
  and a jitted Adam update; on a GPU, JAX's CUDA build where it is installed.

Every peer starts from minicount's initial weights, and its loss on the benchmark batch is
checked against minicount's before anything is timed: a peer that computes something else
is reported and left out. With --threads 1, XLA's thread pool is held to one thread too.

Every row runs its contenders in interleaved rounds (one call of each per round), after a
warm-up, so that all see the same machine; it reports medians and the ratio
minicount / peer (below 1: minicount is faster). On a GPU the clock is read only after
the device has finished (synchronize). On a shared machine the absolute times drift with
the load (printed before and after); the ratios, measured side by side, drift much less.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import minicount as mc  # noqa: E402
from minicount.data import V, sample_batch  # noqa: E402
from minicount.fast.train_step import (  # noqa: E402
    keep_freed_memory,
    loss_and_grads_sliced,
    training_step_timer,
)
from minicount.model import loss_and_grads_all  # noqa: E402
from minicount.optim import AdamW  # noqa: E402
from minicount.record import versions  # noqa: E402
from minicount.threads import blas_limit, cpu_name, default_threads, usable_cores  # noqa: E402

CONFIG = mc.ModelConfig()  # d_model 32, 4 heads x d_head 8, one layer, attention only, NoPE
BATCH, MAX_LEN, LR = 256, 32, 3e-3
M_CPU, M_GPU = (1, 4, 16), (1, 16, 256, 1024)
STUDY_STEPS = 1000  # steps per model in the throughput estimate (the training default)


# ----------------------------------------------------------------------------- timing


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of all threads)


def time_rounds(contenders: dict, repeats: int, warmup: int, sync=None) -> dict:
    """Median and min milliseconds per call of each contender, called in interleaved rounds.

    contenders: name -> zero-argument function (None: skipped). sync: called before each
    clock read (a device synchronize), or None.
    """
    live = {k: f for k, f in contenders.items() if f is not None}
    sync = sync or (lambda: None)
    clock = CLOCK
    for _ in range(warmup):
        for f in live.values():
            f()
    times = {k: [] for k in live}
    for _ in range(repeats):
        for k, f in live.items():
            sync()
            t0 = clock()
            f()
            sync()
            times[k].append(clock() - t0)
    return {
        k: {"median_ms": 1e3 * float(np.median(v)), "min_ms": 1e3 * float(np.min(v)), "n": len(v)}
        for k, v in times.items()
    }


# ------------------------------------------------------------------------- the machine


def blas_info() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed"]
    return [
        {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def import_cupy():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def machine(torch, cupy) -> dict:
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "minicount_default_threads": default_threads(training_step_timer),
        **versions(),  # minicount, numpy, python, platform: the record results carry
        "blas": blas_info(),
        "torch": torch.__version__ if torch else "torch not installed",
        "cupy": cupy.__version__ if cupy else "cupy not installed (or no GPU)",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
    }
    if cupy:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    if torch and torch.cuda.is_available():
        info["torch_gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- the data


def batches(M: int | None, seed: int = 0):
    """tokens [B, T] / targets [B, T, V] / mask [B, T] (or [M, ...]) on the host."""
    rng = np.random.default_rng(seed)
    if M is None:
        return sample_batch(BATCH, MAX_LEN, rng)
    parts = [sample_batch(BATCH, MAX_LEN, rng) for _ in range(M)]
    return tuple(np.stack(a) for a in zip(*parts, strict=True))


# -------------------------------------------------------------------- minicount steps


def minicount_step(
    M: int | None,
    xp,
    n_threads: int | None,
    plain: bool = False,
    trim_padding: bool = True,
    attention: str = "fast",
):
    """(fwd_bwd, step) closures for minicount on xp (numpy or cupy) with M models (None: one).

    plain: model.loss_and_grads_all on the whole batch (the textbook step, with the textbook
    attention) instead of the sliced training path; attention: the sliced path's attention
    ("fast", or "fused" for the CUDA kernel).
    """
    params = mc.init_params(CONFIG, 0, xp) if M is None else mc.init_ensemble(CONFIG, range(M), xp)
    tokens, targets, mask = (xp.asarray(a) for a in batches(M))
    opt = AdamW(lr=LR)
    state = opt.init_state(params)

    def fwd_bwd():
        if plain:
            return loss_and_grads_all(params, tokens, targets, mask, CONFIG)
        return loss_and_grads_sliced(
            params,
            tokens,
            targets,
            mask,
            CONFIG,
            n_threads=n_threads,
            trim_padding=trim_padding,
            attention=attention,
        )

    def step():
        _, grads = fwd_bwd()
        opt.step(params, grads, state)

    return fwd_bwd, step


# ---------------------------------------------------------------------- PyTorch steps


def torch_models(torch):
    """The PyTorch counterparts: one model, and M models batched over a leading axis."""
    nn, F = torch.nn, torch.nn.functional
    c = CONFIG
    HD = c.n_heads * c.d_head

    class Counter(nn.Module):
        """Embedding -> causal self-attention (fused QKV, SDPA) + residual -> unembedding."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(c.d_vocab, c.d_model)
            self.qkv = nn.Linear(c.d_model, 3 * HD, bias=False)
            self.out = nn.Linear(HD, c.d_model, bias=False)
            self.unembed = nn.Linear(c.d_model, c.d_vocab)

        def forward(self, tokens):  # [B, T] -> [B, T, V]
            B, T = tokens.shape
            x = self.embed(tokens)
            q, k, v = self.qkv(x).view(B, T, 3, c.n_heads, c.d_head).permute(2, 0, 3, 1, 4)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, d_head]
            x = x + self.out(z.transpose(1, 2).reshape(B, T, HD))
            return self.unembed(x)

    class Ensemble(nn.Module):
        """M independent models as stacked weights: bmm over the model axis, one SDPA call."""

        def __init__(self, M):
            super().__init__()
            s = 1 / c.d_model**0.5
            self.W_E = nn.Parameter(torch.randn(M, c.d_vocab, c.d_model))
            self.W_QKV = nn.Parameter(torch.randn(M, c.d_model, 3 * HD) * s)
            self.W_O = nn.Parameter(torch.randn(M, HD, c.d_model) / HD**0.5)
            self.W_U = nn.Parameter(torch.randn(M, c.d_model, c.d_vocab) * s)
            self.b_U = nn.Parameter(torch.zeros(M, c.d_vocab))

        def forward(self, tokens):  # [M, B, T] -> [M, B, T, V]
            M, B, T = tokens.shape
            models = torch.arange(M, device=tokens.device)[:, None, None]
            x = self.W_E[models, tokens].view(M, B * T, c.d_model)
            qkv = torch.bmm(x, self.W_QKV).view(M * B, T, 3, c.n_heads, c.d_head)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [M*B, H, T, d_head]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            z = z.transpose(1, 2).reshape(M, B * T, HD)
            x = x + torch.bmm(z, self.W_O)
            return torch.baddbmm(self.b_U[:, None, :], x, self.W_U).view(M, B, T, c.d_vocab)

    return Counter, Ensemble


def minicount_weights(M: int | None):
    """minicount's initial parameters for M models (None: one), on the host: every peer
    starts from these, so that their losses can be checked against minicount's."""
    return mc.init_params(CONFIG, 0) if M is None else mc.init_ensemble(CONFIG, range(M))


def fused_qkv(params: dict) -> np.ndarray:
    """W_Q, W_K, W_V [..., H, d_model, d_head] side by side: [..., d_model, 3*H*d_head]."""
    from minicount.layers.attention import heads_as_matrix

    W = [heads_as_matrix(params["blocks.0.attn." + n]) for n in ("W_Q", "W_K", "W_V")]
    return np.concatenate(W, axis=-1)


def torch_load_weights(torch, model, params: dict, M: int | None) -> None:
    """Copy minicount's parameters into the PyTorch Counter (M None) or Ensemble."""
    HD = CONFIG.n_heads * CONFIG.d_head
    W_QKV, W_O = fused_qkv(params), params["blocks.0.attn.W_O"]
    W_O = W_O.reshape(*W_O.shape[:-3], HD, CONFIG.d_model)  # [..., H*d_head, d_model]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        if M is None:  # nn.Linear keeps weight [out, in]
            model.embed.weight.copy_(t(params["embed.W_E"]))
            model.qkv.weight.copy_(t(W_QKV.T))
            model.out.weight.copy_(t(W_O.T))
            model.unembed.weight.copy_(t(params["unembed.W_U"].T))
            model.unembed.bias.copy_(t(params["unembed.b_U"]))
        else:
            model.W_E.copy_(t(params["embed.W_E"]))
            model.W_QKV.copy_(t(W_QKV))
            model.W_O.copy_(t(W_O))
            model.W_U.copy_(t(params["unembed.W_U"]))
            model.b_U.copy_(t(params["unembed.b_U"]))


def torch_step(torch, M: int | None, device: str, compile: bool = False):
    """(fwd_bwd, step, loss) closures for the PyTorch model(s) on device ('cpu' or 'cuda').

    compile: the model wrapped in torch.compile (the default inductor backend; forward and
    backward compiled, AdamW eager). loss() returns the loss at the initial weights."""
    F = torch.nn.functional
    Counter, Ensemble = torch_models(torch)
    torch.manual_seed(0)
    model = Counter() if M is None else Ensemble(M)
    torch_load_weights(torch, model, minicount_weights(M), M)
    model = model.to(device)
    run = torch.compile(model) if compile else model
    tokens, targets, mask = batches(M)
    tokens = torch.from_numpy(tokens).to(device)
    targets = torch.from_numpy(targets).to(device)
    weight = torch.from_numpy(mask).to(device).float()[..., None]  # [..., B, T, 1]
    n = weight.sum(dim=(-3, -2, -1)) * V  # [] or [M]
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)

    def loss_value():
        logits = run(tokens)
        per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return ((per * weight).sum(dim=(-3, -2, -1)) / n).sum()  # each model's mean, summed

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        loss_value().backward()

    def step():
        fwd_bwd()
        opt.step()

    return fwd_bwd, step, lambda: float(loss_value().detach())


# ---------------------------------------------------------------------------- JAX steps


def import_jax(threads: int):
    """jax, with XLA's CPU thread pool held to one thread when threads == 1 (XLA reads its
    flags once, at import: the thread count cannot change afterwards). None if missing."""
    if threads == 1 and "jax" not in sys.modules:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    try:
        import jax

        jax.default_backend()  # cpu, or gpu for a CUDA build with a GPU
    except ImportError:
        return None
    except Exception:  # a broken install (e.g. a CUDA build without its libraries)
        return None
    return jax


def jax_step(jax, M: int | None):
    """(fwd_bwd, step, loss) for the same model in JAX: jit of value_and_grad, vmap over the
    model axis for an ensemble, and a jitted Adam update (no weight decay, as the others)."""
    jnp = jax.numpy
    H, dh, HD = CONFIG.n_heads, CONFIG.d_head, CONFIG.n_heads * CONFIG.d_head
    host = minicount_weights(M)
    W_O = host["blocks.0.attn.W_O"]
    params = {
        "W_E": host["embed.W_E"],
        "W_QKV": fused_qkv(host),
        "W_O": W_O.reshape(*W_O.shape[:-3], HD, CONFIG.d_model),
        "W_U": host["unembed.W_U"],
        "b_U": host["unembed.b_U"],
    }
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    tokens, targets, mask = (jnp.asarray(a) for a in batches(M))

    def loss_one(P, tokens, targets, mask):  # one model: tokens [B, T]
        B, T = tokens.shape
        x = P["W_E"][tokens]  # [B, T, d]
        q, k, v = (x @ P["W_QKV"]).reshape(B, T, 3, H, dh).transpose(2, 0, 3, 1, 4)
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(dh)  # [B, H, T, T]
        causal = jnp.tril(jnp.ones((T, T), bool))
        pattern = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        z = (pattern @ v).transpose(0, 2, 1, 3).reshape(B, T, HD)  # [B, T, H*d_head]
        logits = (x + z @ P["W_O"]) @ P["W_U"] + P["b_U"]  # [B, T, V]
        per = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
        weight = mask[..., None].astype(jnp.float32)
        return (per * weight).sum() / (weight.sum() * V)

    loss = loss_one if M is None else lambda P, *a: jax.vmap(loss_one)(P, *a).sum()
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def update(P, m, v, t):
        value, g = jax.value_and_grad(loss)(P, tokens, targets, mask)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1**t, 1 - b2**t
        P = jax.tree.map(lambda p, m, v: p - LR * (m / c1) / (jnp.sqrt(v / c2) + eps), P, m, v)
        return P, m, v, value

    state = {"P": params, "m": jax.tree.map(jnp.zeros_like, params)}
    state["v"], state["t"] = jax.tree.map(jnp.zeros_like, params), 0

    def fwd_bwd():
        jax.block_until_ready(value_and_grad(params, tokens, targets, mask))

    def step():
        state["t"] += 1
        P, m, v, _ = update(state["P"], state["m"], state["v"], float(state["t"]))
        state.update(P=P, m=m, v=v)
        jax.block_until_ready(P)

    return fwd_bwd, step, lambda: float(loss(params, tokens, targets, mask))


def minicount_loss(M: int | None) -> float:
    """minicount's loss at the initial weights on the benchmark batch (summed over models)."""
    params = minicount_weights(M)
    return float(np.sum(loss_and_grads_all(params, *batches(M), CONFIG)[0]))


def cross_checked(peers: dict, M: int | None, rtol: float = 1e-4) -> dict:
    """The peers (name -> (fwd_bwd, step, loss)) whose loss at the shared initial weights
    equals minicount's; a peer that disagrees is reported and left out of the timing."""
    want = minicount_loss(M)
    kept = {}
    for name, closures in peers.items():
        try:
            got = closures[2]()  # torch.compile compiles here
        except Exception as e:  # e.g. no C++ compiler for inductor: report, go on without
            print(f"  {name} failed: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
            continue
        if abs(got - want) <= rtol * abs(want):
            kept[name] = closures
        else:
            print(f"  {name}: loss {got:.6f} != minicount's {want:.6f}: left out", flush=True)
    return kept


# ------------------------------------------------------------------------ peak memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_memory_probe(framework: str, M: int | None, n_threads: int) -> float:
    """Run in a fresh process: MiB of resident memory that training steps add at their peak.

    After a first step (lazy set-up done) freed memory is handed back (malloc_trim) and the
    peak-RSS mark is reset to the current RSS (Linux: /proc/self/clear_refs); three steps
    run, and the new peak minus the RSS before is the steps' own need (parameters,
    optimiser state and the batch are resident before).
    """
    if framework == "torch":
        torch = import_torch()
        torch.set_num_threads(n_threads)
        _, step, _ = torch_step(torch, M, "cpu")
    else:
        _, step = minicount_step(M, np, n_threads)
    step()
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    rss = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    for _ in range(3):
        step()
    return (_status_kib("VmHWM") - rss) / 1024


def cpu_peak_memory(framework: str, M: int | None, n_threads: int) -> float | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        framework,
        "--threads",
        str(n_threads),
    ] + (["--models", str(M)] if M else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------- rows


PEERS = ("torch", "torch.compile", "jax")  # the frameworks minicount is timed against


def add_row(
    rows: list, name: str, device: str, M, result: dict, mc_key: str, torch_key: str, **extra
):
    """One row: minicount's median, and each peer's with the ratio minicount / peer.

    torch_key names PyTorch eager's entry in result (None: a minicount-only row); the other
    peers (torch.compile, jax) are taken from result when they ran."""
    mc_ms = result.get(mc_key, {}).get("median_ms")
    torch_ms = result.get(torch_key, {}).get("median_ms") if torch_key else None
    missing = "torch not installed" if torch_key else "n/a"
    peers = {}
    if torch_key:
        for peer in PEERS:
            key = torch_key if peer == "torch" else peer
            ms = result.get(key, {}).get("median_ms")
            if ms is not None:
                peers[peer] = {"ms": ms, "ratio": mc_ms / ms if mc_ms else None}
    row = {
        "name": name,
        "device": device,
        "models": M or 1,
        "minicount_ms": mc_ms,
        "torch_ms": torch_ms if torch_ms is not None else missing,
        "ratio": (mc_ms / torch_ms) if (mc_ms and torch_ms) else None,
        "peers": peers,
        "detail": result,
    }
    row.update(extra)
    rows.append(row)
    text = " | ".join(f"{p} {v['ms']:8.2f} ms ({v['ratio']:.2f})" for p, v in peers.items())
    print(
        f"  {name:<34} {device:<4} M={M or 1:<5} minicount {mc_ms:8.2f} ms | "
        + (text or ("-" if not torch_key else missing)),
        flush=True,
    )
    return row


def cpu_peers(torch, jax, args, M: int | None, n_threads: int) -> dict:
    """name -> (fwd_bwd, step, loss) of the peers that are installed and compute minicount's
    loss; JAX only at the thread count it was imported with."""
    peers = {}
    if torch:
        peers["torch"] = torch_step(torch, M, "cpu")
        if not args.no_compile:
            peers["torch.compile"] = torch_step(torch, M, "cpu", compile=True)
    if jax and n_threads == args.threads:
        peers["jax"] = jax_step(jax, M)
    return cross_checked(peers, M)


def cpu_rows(torch, jax, args) -> list:
    rows = []
    reps, warm = (10, 2) if args.quick else (args.repeats, 5)
    thread_counts = sorted({1, args.threads})
    for n_threads in thread_counts:
        if torch:
            torch.set_num_threads(n_threads)
        tag = f"{n_threads} thread{'s' if n_threads > 1 else ''}"
        mc_fb, mc_step = minicount_step(None, np, n_threads)
        peers = cpu_peers(torch, jax, args, None, n_threads)
        fbs = {k: v[0] for k, v in peers.items()}
        r = time_rounds({"minicount": mc_fb, **fbs}, reps, warm)
        add_row(
            rows, f"forward+backward ({tag})", "cpu", None, r, "minicount", "torch",
            threads=n_threads,
        )  # fmt: skip
        if n_threads == args.threads:  # for reference: without trimming, and the plain path
            t_fb = fbs.get("torch")
            untrimmed_fb = minicount_step(None, np, n_threads, trim_padding=False)[0]
            r = time_rounds({"minicount": untrimmed_fb, "torch": t_fb}, max(5, reps // 2), 2)
            add_row(
                rows, f"  same, padding not trimmed ({tag})", "cpu", None, r, "minicount",
                "torch", threads=n_threads,
            )  # fmt: skip
            plain_fb = minicount_step(None, np, n_threads, plain=True)[0]
            r = time_rounds({"minicount": plain_fb, "torch": t_fb}, max(5, reps // 2), 2)
            add_row(
                rows, f"  plain whole-batch path ({tag})", "cpu", None, r, "minicount",
                "torch", threads=n_threads,
            )  # fmt: skip
        steps = {k: v[1] for k, v in peers.items()}
        r = time_rounds({"minicount": mc_step, **steps}, reps, warm)
        add_row(
            rows, f"training step ({tag})", "cpu", None, r, "minicount", "torch", threads=n_threads
        )
    if torch:
        torch.set_num_threads(args.threads)
    for M in M_CPU[:2] if args.quick else M_CPU:
        mc_fb, mc_step = minicount_step(M, np, args.threads)
        peers = cpu_peers(torch, jax, args, M, args.threads)
        n_reps = max(5, reps // M)
        r = time_rounds({"minicount": mc_fb, **{k: v[0] for k, v in peers.items()}}, n_reps, 1)
        add_row(
            rows, f"ensemble fwd+bwd ({args.threads} thr)", "cpu", M, r, "minicount", "torch",
            threads=args.threads, per_model_ms=r["minicount"]["median_ms"] / M,
        )  # fmt: skip
        r = time_rounds({"minicount": mc_step, **{k: v[1] for k, v in peers.items()}}, n_reps, 1)
        add_row(
            rows, f"ensemble step ({args.threads} threads)", "cpu", M, r, "minicount", "torch",
            threads=args.threads, per_model_ms=r["minicount"]["median_ms"] / M,
        )  # fmt: skip
    # data: one batch of 256 strings (host-side NumPy; PyTorch has no part in it)
    rng = np.random.default_rng(0)
    r = time_rounds({"minicount": lambda: sample_batch(BATCH, MAX_LEN, rng)}, 10 * reps, 10)
    add_row(rows, "sample one batch (256 strings)", "cpu", None, r, "minicount", None)
    if not args.quick:
        for M in (None, M_CPU[-1]):
            mem = {
                "minicount": cpu_peak_memory("minicount", M, args.threads),
                "torch": cpu_peak_memory("torch", M, args.threads) if torch else None,
            }
            rows.append(
                {
                    "name": "peak memory of a step (MiB above steady RSS)",
                    "device": "cpu",
                    "models": M or 1,
                    "minicount_mib": mem["minicount"],
                    "torch_mib": mem["torch"] if torch else "torch not installed",
                }
            )
            print(
                f"  peak memory of a step, M={M or 1}: minicount {mem['minicount']} MiB, "
                f"torch {mem['torch']} MiB (peak RSS above the steady state)",
                flush=True,
            )
    return rows


def gpu_data_row(rows: list, M: int, cupy, reps: int) -> float:
    """Host-side sampling of M members' batches (one generator each) plus the copy to the GPU."""
    from minicount.data import sample_batches

    def draw(n_threads):
        rngs = [np.random.default_rng([s, 1]) for s in range(M)]
        return lambda: cupy.asarray(sample_batches(BATCH, MAX_LEN, rngs, n_threads=n_threads)[1])

    contenders = {"minicount": draw(None), "minicount_1_thread": draw(1)}
    r = time_rounds(contenders, reps, 1, cupy.cuda.Device().synchronize)
    threads = default_threads(training_step_timer)
    add_row(rows, f"sample {M} batches + copy ({threads} thr)", "gpu", M, r, "minicount", None)
    add_row(rows, f"sample {M} batches + copy (1 thread)", "gpu", M, r, "minicount_1_thread", None)
    return r["minicount"]["median_ms"]


def gpu_rows(torch, cupy, args, jax=None) -> list:
    rows = []
    jax_gpu = jax if (jax and jax.default_backend() == "gpu") else None
    if jax and not jax_gpu:
        print("  jax has no CUDA here (install jax[cuda12]): JAX GPU rows are skipped", flush=True)
    reps, warm = (5, 2) if args.quick else (args.repeats, 5)
    torch_cuda = torch if (torch and torch.cuda.is_available()) else None
    mempool = cupy.get_default_memory_pool()

    def sync():
        cupy.cuda.Device().synchronize()
        if torch_cuda:
            torch_cuda.cuda.synchronize()

    def peak_mib(step):
        """The memory pool's high-water mark over one step (it only grows within a step)."""
        mempool.free_all_blocks()
        step()
        sync()
        return mempool.total_bytes() / 2**20

    Ms = M_GPU[:2] if args.quick else M_GPU
    if torch and not torch_cuda:
        print("  torch has no CUDA here: PyTorch GPU rows are skipped", flush=True)
    for M in Ms:
        n_reps = reps if M < 256 else max(3, reps // 4)
        mc_fb, mc_step = minicount_step(None if M == 1 else M, cupy, 1)
        fused_fb, fused_step = minicount_step(None if M == 1 else M, cupy, 1, attention="fused")
        peaks = {"minicount": peak_mib(mc_step)}
        try:
            peaks["minicount_fused"] = peak_mib(fused_step)
        except Exception as e:  # report and go on with the plain path
            print(f"  fused CUDA kernel failed: {type(e).__name__}: {e}", flush=True)
            fused_fb = fused_step = None
        t_fb = t_step = None
        if torch_cuda:
            t_fb, t_step, _ = torch_step(torch_cuda, None if M == 1 else M, "cuda")
            torch_cuda.cuda.reset_peak_memory_stats()
            t_step()
            sync()
            peaks["torch"] = torch_cuda.cuda.max_memory_allocated() / 2**20
        j_fb = j_step = None
        if jax_gpu:
            jax_peer = cross_checked({"jax": jax_step(jax_gpu, None if M == 1 else M)}, M)
            j_fb, j_step = jax_peer["jax"][:2] if jax_peer else (None, None)
        r = time_rounds(
            {"minicount": mc_fb, "minicount_fused": fused_fb, "torch": t_fb, "jax": j_fb},
            n_reps,
            warm,
            sync,
        )
        add_row(rows, "forward+backward", "gpu", M, r, "minicount", "torch")
        if fused_fb:
            add_row(
                rows, "forward+backward (fused kernel)", "gpu", M, r, "minicount_fused", "torch"
            )
        r = time_rounds(
            {"minicount": mc_step, "minicount_fused": fused_step, "torch": t_step, "jax": j_step},
            n_reps,
            warm,
            sync,
        )
        add_row(rows, "training step", "gpu", M, r, "minicount", "torch", peak_mib=peaks)
        if fused_step:
            add_row(
                rows,
                "training step (fused kernel)",
                "gpu",
                M,
                r,
                "minicount_fused",
                "torch",
                peak_mib=peaks,
            )
        print(
            f"  {'':<34} peak memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()),
            flush=True,
        )
        if M == Ms[-1]:
            step_ms = min(r[k]["median_ms"] for k in ("minicount", "minicount_fused") if k in r)
            data_ms = gpu_data_row(rows, M, cupy, max(3, n_reps // 2))
            per_step = (step_ms + data_ms) / 1e3
            rows.append(
                {
                    "name": "study estimate",
                    "device": "gpu",
                    "models": M,
                    "steps": STUDY_STEPS,
                    "step_ms": step_ms,
                    "data_ms": data_ms,
                    "seconds_for_M_models": per_step * STUDY_STEPS,
                    "seconds_for_1000_seeds": per_step * STUDY_STEPS * 1000 / M,
                }
            )
            print(
                f"  study estimate: {M} models x {STUDY_STEPS} steps ~ "
                f"{per_step * STUDY_STEPS:.0f} s (step {step_ms:.1f} ms + data "
                f"{data_ms:.1f} ms); 1000 seeds ~ {per_step * STUDY_STEPS * 1000 / M:.0f} s",
                flush=True,
            )
        del mc_fb, mc_step, fused_fb, fused_step, t_fb, t_step, j_fb, j_step
        mempool.free_all_blocks()
        if torch_cuda:
            torch_cuda.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- analysis

ANALYSIS_HEADS, ANALYSIS_MODELS, ANALYSIS_EVAL = (4, 8), 8, 1024  # the default study's sizes


def analysis_rows(args) -> list:
    """analyze_model on each member in turn vs analyze_ensemble on all of them at once
    (M = 8 seeds, n_eval 1024 held-out strings of up to 32 symbols, d_model 32, d_head 8)."""
    from minicount.analysis import analyze_ensemble, analyze_model
    from minicount.data import DataConfig, eval_set

    rows = []
    reps = 1 if args.quick else 3
    tokens, targets, mask = eval_set(DataConfig(max_len=MAX_LEN, n_eval=ANALYSIS_EVAL))
    for H in ANALYSIS_HEADS:
        config = mc.ModelConfig(n_heads=H)
        params = mc.init_ensemble(config, range(ANALYSIS_MODELS))
        members = mc.members(params)

        def loop(config=config, members=members):
            return [analyze_model(m, tokens, targets, mask, config) for m in members]

        def ensemble(config=config, params=params):
            return analyze_ensemble(params, tokens, targets, mask, config)

        r = time_rounds({"per-model loop": loop, "analyze_ensemble": ensemble}, reps, 0)
        loop_ms, ens_ms = r["per-model loop"]["median_ms"], r["analyze_ensemble"]["median_ms"]
        rows.append(
            {
                "name": f"analysis of an ensemble (H={H})",
                "device": "cpu",
                "models": ANALYSIS_MODELS,
                "loop_ms": loop_ms,
                "ensemble_ms": ens_ms,
                "speedup": loop_ms / ens_ms,
                "detail": r,
            }
        )
        print(
            f"  analysis H={H} M={ANALYSIS_MODELS} n_eval={ANALYSIS_EVAL}: per-model loop "
            f"{loop_ms / 1e3:7.2f} s   analyze_ensemble {ens_ms / 1e3:7.2f} s   "
            f"speed-up {loop_ms / ens_ms:5.2f}x",
            flush=True,
        )
    return rows


def gpu_analysis_rows(args) -> list:
    """analyze_ensemble on --analysis-models default models on the GPU (one warm-up on 8)."""
    import cupy

    from minicount.analysis import analyze_ensemble
    from minicount.backend import to_device
    from minicount.data import DataConfig, eval_set

    tokens, targets, mask = eval_set(DataConfig(max_len=MAX_LEN, n_eval=ANALYSIS_EVAL))
    config = mc.ModelConfig(n_heads=4)
    rows = []
    for M in (8, args.analysis_models):
        params = to_device(mc.init_ensemble(config, range(M)), "gpu")
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        analyze_ensemble(params, tokens, targets, mask, config)
        cupy.cuda.Device().synchronize()
        seconds = time.perf_counter() - t0
        print(f"  analyze_ensemble on the GPU, H=4 M={M} n_eval={ANALYSIS_EVAL}: {seconds:.1f} s",
              flush=True)  # fmt: skip
        rows.append({"name": "analysis on the GPU (H=4)", "device": "gpu", "models": M,
                     "ensemble_ms": 1e3 * seconds})  # fmt: skip
        del params
        cupy.get_default_memory_pool().free_all_blocks()
    return rows


# ------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m minicount bench", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and configurations")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--threads",
        type=int,
        default=default_threads(training_step_timer),
        help="CPU threads for both frameworks (default: the usable cores, %(default)s)",
    )
    p.add_argument("--repeats", type=int, default=40, help="timed rounds per row (%(default)s)")
    p.add_argument(
        "--analysis-models",
        type=int,
        default=1000,
        help="models analysed at once by --analysis --device gpu (%(default)s)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: CPU time of the process, summed over "
        "its threads (steadier on a shared machine, but not a latency)",
    )
    p.add_argument(
        "--analysis",
        action="store_true",
        help="only the analysis section: analyze_model per member vs analyze_ensemble "
        "(with --device gpu: analyze_ensemble on --analysis-models models)",
    )
    p.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (it compiles each model)"
    )
    p.add_argument("--no-jax", action="store_true", help="skip JAX")
    p.add_argument("--memory-probe", choices=("minicount", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--models", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    keep_freed_memory()  # the same allocator settings for both frameworks (fast.train_step)
    # NumPy's BLAS gets the thread budget that torch gets, for the whole run
    blas_limit(args.threads).__enter__()
    if args.memory_probe:
        print(peak_memory_probe(args.memory_probe, args.models, args.threads))
        return 0
    torch = import_torch()
    jax = None if args.no_jax else import_jax(args.threads)
    cupy = import_cupy() if args.device in ("gpu", "all") else None
    if args.device in ("gpu", "all") and cupy is None:
        print("bench: error: --device gpu needs CuPy and a CUDA GPU", file=sys.stderr)
        return 2
    info = machine(torch, cupy)
    info["jax"] = f"{jax.__version__} ({jax.default_backend()})" if jax else "jax not installed"
    config = {
        "batch": BATCH,
        "max_len": MAX_LEN,
        "T": MAX_LEN + 1,
        "dtype": "float32",
        "model": CONFIG.to_dict(),
        "threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "lr": LR,
        "clock": args.clock,
    }
    print("minicount benchmark")
    for k, v in info.items():
        print(f"  {k}: {v}")
    print(f"  config: {config}")
    if torch is None:
        print("  torch not installed: PyTorch rows are skipped (pip install 'minicount[bench]')")
    if jax is None and not args.no_jax:
        print("  jax not installed: JAX rows are skipped (pip install 'minicount[bench]')")
    elif jax and args.threads > 1:
        print("  jax: XLA's own thread pool (all cores) in every row it runs in")
    load_before = os.getloadavg()
    print(f"  load average before: {load_before[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    rows = []
    if args.analysis and args.device == "gpu":
        print("analysis (CuPy: analyze_ensemble on many models)")
        rows += gpu_analysis_rows(args)
    elif args.analysis:
        print("analysis (NumPy: per-model loop vs analyze_ensemble)")
        rows += analysis_rows(args)
    elif args.device in ("cpu", "all"):
        print("CPU (NumPy vs PyTorch eager, torch.compile and JAX jit; ratio minicount / peer)")
        rows += cpu_rows(torch, jax, args)
    if args.device in ("gpu", "all") and not args.analysis:
        print("GPU (CuPy vs PyTorch eager CUDA)")
        rows += gpu_rows(torch, cupy, args, jax)
    load_after = os.getloadavg()
    took = time.perf_counter() - t0
    print(f"  load average after: {load_after[0]:.2f}; benchmark took {took:.0f} s")
    if args.json:
        result = {
            "machine": info,
            "config": config,
            "rows": rows,
            "load_average": {"before": load_before[0], "after": load_after[0]},
            "command": " ".join([Path(sys.executable).name] + sys.argv),
        }
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
