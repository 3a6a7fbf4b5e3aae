# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 2 · Attention by hand
#
# One attention head, one short string, plain NumPy, one line per step: queries, keys and
# values; scores; the causal mask; the softmax; the weighted sum of values; the output
# projection. Then the same numbers from `minicount.layers.attention_forward`, which does
# all of it for many heads and many strings at once. Every array's shape is printed or
# written beside the line that makes it; keep an eye on them, they carry half the meaning.
#
# The library check at the end of section 7 runs on the device named by
# `MINICOUNT_DEVICE` (`cpu`, the default, or `gpu` with CuPy installed); nothing else in
# the code changes.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from minicount import data, layers
from minicount.backend import array_module, resolve_device, to_device, to_numpy
from minicount.notebook import check_exercise, save_figure

DEVICE = resolve_device(os.environ.get("MINICOUNT_DEVICE", "cpu"))
np.set_printoptions(precision=3, suppress=True)


# %% [markdown]
# ## 1. The input
#
# A head reads the **residual stream**: one vector of width `d_model` per position. In a
# one-layer model that is just the token embedding, `x = W_E[tokens]`. We take the string
# `0112`, so `T = 5` positions with `BOS`, and small random weights. The widths are chosen
# different from each other (`d_model = 4`, `d_head = 3`) so that a shape tells you which
# axis is which.

# %%
string = "0112"
tokens = data.encode(string)  # [T] = [5]
labels = ["BOS"] + list(string)  # for printing and plotting
T, d_model, d_head = len(tokens), 4, 3
rng = np.random.default_rng(0)
W_E = rng.standard_normal((data.V, d_model))  # [V, d_model]
W_Q = rng.standard_normal((d_model, d_head)) / np.sqrt(d_model)  # [d_model, d_head]
W_K = rng.standard_normal((d_model, d_head)) / np.sqrt(d_model)  # [d_model, d_head]
W_V = rng.standard_normal((d_model, d_head)) / np.sqrt(d_model)  # [d_model, d_head]
W_O = rng.standard_normal((d_head, d_model)) / np.sqrt(d_head)  # [d_head, d_model]
x = W_E[tokens]  # [T, d_model]: row t is the embedding of the token at position t
print("tokens", tokens, " x", x.shape)

# %% [markdown]
# ## 2. Queries, keys and values
#
# Every position makes three vectors of width `d_head` from its own `x` row, with three
# matrices shared by all positions:
#
# * the **query** $q_t$ — what position `t` is looking for,
# * the **key** $k_j$ — what position `j` offers to be found by,
# * the **value** $v_j$ — what position `j` hands over if it is attended to.
#
# One matrix product does all positions at once, because `x` holds them as rows.

# %%
q = x @ W_Q  # [T, d_model] @ [d_model, d_head] -> [T, d_head]
k = x @ W_K  # [T, d_head]
v = x @ W_V  # [T, d_head]
print("q", q.shape, " k", k.shape, " v", v.shape)

# %% [markdown]
# ## 3. Scores
#
# The score of key `j` for query `t` is their dot product, divided by $\sqrt{d_{head}}$:
#
# $$ \text{scores}_{tj} = \frac{q_t \cdot k_j}{\sqrt{d_{head}}}. $$
#
# All $T \times T$ of them are one product, `q @ k.T`. Row `t` holds query `t`'s scores
# for every key.

# %%
scores = q @ k.T / np.sqrt(d_head)  # [T, d_head] @ [d_head, T] -> [T, T]
print("scores", scores.shape, "(rows: queries, columns: keys)")
print(scores)

# %% [markdown]
# **Why divide by $\sqrt{d_{head}}$?** If the entries of $q$ and $k$ are independent with
# mean 0 and variance 1, then $q \cdot k$ is a sum of `d_head` such products and has
# variance `d_head`. Wide heads would produce large scores, and the softmax of large scores
# is nearly one-hot: a head starts out attending to one key only, and (tutorial 3 shows
# why) the gradients through a saturated softmax are tiny. Dividing by the standard
# deviation keeps scores of order 1 whatever the width. Here is the effect, measured on
# random vectors with 16 keys per query:

# %%
sizes = np.random.default_rng(1)
print("d_head   std(q.k)   mean max weight, unscaled   scaled")
for width in (2, 8, 32, 128):
    q_rand = sizes.standard_normal((1000, width))  # [queries, d_head]
    k_rand = sizes.standard_normal((16, width))  # [keys, d_head]
    raw = q_rand @ k_rand.T  # [1000, 16]
    for_max = []
    for s in (raw, raw / np.sqrt(width)):
        weights = np.exp(s - s.max(1, keepdims=True))
        for_max.append((weights / weights.sum(1, keepdims=True)).max(1).mean())
    print(f"{width:6}   {raw.std():8.2f}   {for_max[0]:22.2f}   {for_max[1]:8.2f}")

# %% [markdown]
# Unscaled, a 128-wide head puts almost all of its weight on one key out of 16; scaled,
# the weights stay spread out at every width.
#
# ## 4. The causal mask
#
# A language model may not look ahead: query `t` may only see keys `j <= t`. We keep the
# lower triangle (diagonal included) and set the scores above it to $-\infty$, so that the
# softmax gives them exactly zero weight.

# %%
causal = np.tril(np.ones((T, T), dtype=bool))  # [T, T]: True where key j <= query t
masked_scores = np.where(causal, scores, -np.inf)  # [T, T]
print(causal.astype(int))
print(masked_scores)

# %% [markdown]
# ## 5. Softmax over the keys
#
# Each row becomes a probability distribution over the keys:
#
# $$ \text{pattern}_{tj} = \frac{e^{\text{scores}_{tj}}}{\sum_{i \le t} e^{\text{scores}_{ti}}}. $$
#
# Subtracting the row maximum first changes nothing mathematically (it cancels between
# numerator and denominator) but keeps `exp` from overflowing; $e^{-\infty} = 0$ takes care
# of the mask. The diagonal is never masked, so every row has at least one finite score.

# %%
shifted = masked_scores - masked_scores.max(axis=-1, keepdims=True)  # [T, T], row max is 0
weights = np.exp(shifted)  # [T, T], exactly 0 above the diagonal
pattern = weights / weights.sum(axis=-1, keepdims=True)  # [T, T], rows sum to 1
print(pattern)
print("row sums:", pattern.sum(axis=-1))
assert np.allclose(pattern.sum(axis=-1), 1) and np.all(pattern[~causal] == 0)

# %% [markdown]
# Row 0 is always `[1, 0, 0, ...]`: `BOS` can only see itself. Positions 2 and 3 both hold
# a `1`, so their keys are equal and every query that sees both gives them the same weight
# (and their rows of scores are equal too): without a positional embedding a head cannot
# tell two copies of a token apart, which is the multiset argument of tutorial 1 again.
# This matrix is the **attention pattern**, the object interpretability work looks at most.
#
# ## 6. The weighted sum of values, and the output
#
# Query `t` receives the average of the values it can see, weighted by its row of the
# pattern: $z_t = \sum_{j \le t} \text{pattern}_{tj}\, v_j$. For all queries at once that
# is `pattern @ v`. Finally `W_O` maps the head's `d_head`-wide result back to the width
# of the residual stream, where it is added to `x`.

# %%
z = pattern @ v  # [T, T] @ [T, d_head] -> [T, d_head]
out = z @ W_O  # [T, d_head] @ [d_head, d_model] -> [T, d_model]
print("z", z.shape, " out", out.shape)
print(out)

# %% [markdown]
# ## 7. The same numbers from minicount
#
# `layers.attention_forward(x, W_Q, W_K, W_V, W_O)` computes all heads for a whole batch.
# Its shapes add a batch axis `B` to the activations and a head axis `H` to the weights:
#
# | argument | here | in the library |
# |---|---|---|
# | `x` | `[T, d_model]` | `[B, T, d_model]` |
# | `W_Q`, `W_K`, `W_V` | `[d_model, d_head]` | `[H, d_model, d_head]` |
# | `W_O` | `[d_head, d_model]` | `[H, d_head, d_model]` |
#
# so `x[None]` (B = 1) and `W[None]` (H = 1) give our single head. It returns the output
# `[B, T, d_model]` and a `cache` of named activations (kept for the backward pass of
# tutorial 3); `cache["pattern"]` is `[B, H, T, T]`. The inputs are moved to `DEVICE`
# first; the function asks its inputs whether they are NumPy or CuPy arrays and uses that
# module, so the call is the same on both. `to_numpy` brings the results back.

# %%
inputs = to_device([x[None], W_Q[None], W_K[None], W_V[None], W_O[None]], DEVICE)
lib_out, cache = layers.attention_forward(*inputs)  # [1, T, d_model], dict
print(f"attention_forward ran on {DEVICE} with {array_module(lib_out).__name__} arrays")
lib_out, lib_pattern = to_numpy(lib_out), to_numpy(cache["pattern"])
print("library out", lib_out.shape, " library pattern", lib_pattern.shape)
print("max |difference|, out:    ", np.abs(lib_out[0] - out).max())
print("max |difference|, pattern:", np.abs(lib_pattern[0, 0] - pattern).max())
assert np.allclose(lib_out[0], out) and np.allclose(lib_pattern[0, 0], pattern)

# %% [markdown]
# Equal up to rounding (around 1e-16 in float64). The library writes the same steps,
# numbered 1–5, with a shape comment on every line: read `minicount/layers/attention.py`
# side by side with this notebook.
#
# ## 8. Designing a head
#
# Random weights give a pattern with no meaning. Because the scores are dot products of
# things computed from tokens, we can *design* them. With a one-hot embedding
# (`x_t = e_{token_t}`, `d_model = V = 6`) and `d_head = 1`:
#
# * `W_Q = 1` for every token: every query is the number 1;
# * `W_K = β` for the token `1` and 0 for the rest: key `j` is β if it holds a `1`.
#
# Then `scores[t, j] = β·[token_j = 1]`: the head looks for 1s. Among the keys a query can
# see, each `1` gets weight $e^\beta$ times that of any other token. With β = 4 that is
# about 55 times; as β grows, the head splits its attention evenly over the 1s it has seen
# (and over all its keys if it has seen none).


# %%
def one_head_pattern(x, W_Q, W_K):
    """The causal attention pattern of one head: x [T, d_model] -> [T, T] (steps 2-5 above)."""
    scores = (x @ W_Q) @ (x @ W_K).T / np.sqrt(W_Q.shape[1])  # [T, T]
    scores = np.where(np.tril(np.ones(scores.shape, dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [T, T]
    return weights / weights.sum(axis=-1, keepdims=True)


designed_string = "20121001"
designed_tokens = data.encode(designed_string)  # [T] = [9]
designed_labels = ["BOS"] + list(designed_string)
one_hot = np.eye(data.V)[designed_tokens]  # [T, V]: x_t = e_{token_t}
beta = 4.0
W_Q_find = np.ones((data.V, 1))  # [d_model=6, d_head=1]
W_K_find = np.zeros((data.V, 1))  # [6, 1]
W_K_find[data.ONE] = beta
find_ones = one_head_pattern(one_hot, W_Q_find, W_K_find)  # [T, T]
on_ones = find_ones[:, designed_tokens == data.ONE].sum(axis=1)  # [T]
for label, share in zip(designed_labels, on_ones, strict=True):
    print(f"query reading {label:>3}: weight on 1s = {share:.3f}")

# %% [markdown]
# Before the first `1` (queries `BOS`, `2`, `0`) there is nothing to find and the weight
# is spread evenly; from the first `1` on, almost all of it sits on the 1s.
#
# The figure shows both patterns with the tokens on the axes: rows are queries (the
# position doing the looking), columns are keys (the positions looked at). The empty upper
# triangle is the causal mask.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
for ax, pat, names, title in (
    (axes[0], pattern, labels, "random weights"),
    (axes[1], find_ones, designed_labels, f"designed: find the 1s (beta = {beta:g})"),
):
    image = ax.imshow(pat, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for t in range(len(names)):
        for j in range(t + 1):
            ax.text(
                j,
                t,
                f"{pat[t, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if pat[t, j] > 0.6 else "black",
            )
    ax.set(xlabel="key j", ylabel="query t", title=title)
fig.colorbar(image, ax=axes, fraction=0.03, label="pattern[t, j]")
save_figure(fig, "02_attention_patterns.png")

# %% [markdown]
# ## 9. Many heads and many strings at once
#
# A layer has `H` heads, each with its own `W_Q, W_K, W_V [d_model, d_head]` and
# `W_O [d_head, d_model]`; each computes exactly sections 2–6, and the layer's output is the
# **sum** of the heads' outputs:
#
# $$ \text{out}_t = \sum_h z^h_t\, W_O^h. $$
#
# The library lays the heads side by side so that one matrix product computes them all,
# and names each intermediate activation. A **hook** is a function given to the forward
# pass under such a name; it receives the activation and returns it (or an edited copy).
# Here the hooks only record shapes, for a batch of `B = 2` strings and `H = 3` heads:

# %%
batch_tokens, _, _ = data.sample_batch(2, 6, np.random.default_rng(3))  # [B=2, T=7]
H = 3
r = np.random.default_rng(4)
x_batch = r.standard_normal((data.V, d_model))[batch_tokens]  # [B, T, d_model]
W_Qs, W_Ks, W_Vs = (r.standard_normal((H, d_model, d_head)) for _ in range(3))  # [H, d, d_head]
W_Os = r.standard_normal((H, d_head, d_model))  # [H, d_head, d_model]
shapes = {}


def recorder(name):
    def hook(activation):
        shapes[name] = activation.shape
        return activation

    return hook


names = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")
out_batch, _ = layers.attention_forward(
    x_batch, W_Qs, W_Ks, W_Vs, W_Os, hooks={n: recorder(n) for n in names}
)
print("x  ", x_batch.shape, "  [B, T, d_model]")
for name in names:
    print(f"{name:17}", shapes[name])
print("out", out_batch.shape, "  [B, T, d_model]")

# %% [markdown]
# Read the shapes: queries, keys, values and `z` are `[B, H, T, d_head]`; scores and
# pattern `[B, H, T, T]`, one `T × T` matrix per string and head; `hook_result`
# `[B, H, T, d_model]` holds each head's own contribution $z^h W_O^h$ before the sum over
# `H`. In the full model the same names carry a prefix, e.g.
# `blocks.0.attn.hook_pattern` (tutorial 1 recorded the hand-built counter's pattern that
# way).
#
# ### Exercise 2: multi-head attention in plain NumPy
#
# Write `multi_head_attention(x, W_Q, W_K, W_V, W_O)` for one string: `x [T, d_model]`,
# `W_Q, W_K, W_V [H, d_model, d_head]`, `W_O [H, d_head, d_model]` → `out [T, d_model]`,
# following sections 2–6 head by head (a Python loop over heads is fine) and summing the
# heads' outputs. The check compares it with `layers.attention_forward` on random inputs
# with several heads. (`one_head_pattern` above may help.)


# %%
def multi_head_attention(x, W_Q, W_K, W_V, W_O):
    """x [T, d_model], W_Q/K/V [H, d_model, d_head], W_O [H, d_head, d_model] -> [T, d_model]."""
    raise NotImplementedError("exercise 2: your code here")


def test_multi_head_attention(fn):
    r = np.random.default_rng(5)
    for T_, d_model_, d_head_, H_ in ((1, 2, 1, 1), (6, 5, 3, 2), (9, 8, 4, 4)):
        x_ = r.standard_normal((T_, d_model_))
        Ws = [r.standard_normal((H_, d_model_, d_head_)) for _ in range(3)]
        W_O_ = r.standard_normal((H_, d_head_, d_model_))
        expected, _ = layers.attention_forward(x_[None], *Ws, W_O_)  # [1, T, d_model]
        got = np.asarray(fn(x_, *Ws, W_O_))
        assert got.shape == (T_, d_model_), f"expected shape {(T_, d_model_)}, got {got.shape}"
        err = np.abs(got - expected[0]).max()
        assert err < 1e-10, f"T={T_}, H={H_}: max |difference| {err:.2e} from attention_forward"


check_exercise("exercise 2", multi_head_attention, test_multi_head_attention)

# %% [markdown]
# **What to take away.** Attention is four matrix products and a row-wise softmax:
# `q, k, v = x W_Q, x W_K, x W_V`; `scores = q kᵀ/√d_head` `[T, T]`; mask above the
# diagonal; `pattern = softmax(scores)` row by row; `out = (pattern v) W_O`, summed over
# heads. The pattern says where each position looks; the values say what it brings back.
# Next, tutorial 3 runs this backwards and derives every gradient by hand.
#
# ## Solutions
#
# The reference solution, run through the same check.


# %%
def multi_head_attention_solution(x, W_Q, W_K, W_V, W_O):
    """x [T, d_model], W_Q/K/V [H, d_model, d_head], W_O [H, d_head, d_model] -> [T, d_model]."""
    out = np.zeros_like(x)  # [T, d_model]
    for h in range(W_Q.shape[0]):
        pattern_h = one_head_pattern(x, W_Q[h], W_K[h])  # [T, T]
        z_h = pattern_h @ (x @ W_V[h])  # [T, T] @ [T, d_head] -> [T, d_head]
        out += z_h @ W_O[h]  # [T, d_head] @ [d_head, d_model] -> [T, d_model]
    return out


assert check_exercise(
    "exercise 2, solution", multi_head_attention_solution, test_multi_head_attention
)
