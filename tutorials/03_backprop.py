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
# # Tutorial 3 · Backpropagation by hand, through softmax attention
#
# minicount has no automatic differentiation: every layer comes with a hand-written
# backward function. This tutorial derives the backward pass of one attention head, one
# step at a time, with the code for each step right under its derivation. Then it checks
# the result the way the project's tests do, against finite differences in float64, and
# shows what a wrong gradient looks like to that check.
#
# You need the forward pass of tutorial 2 (queries, keys, values, scores, mask, softmax,
# weighted sum, output projection) and the chain rule. Section 6 runs the library's
# backward on the device named by `MINICOUNT_DEVICE` (`cpu` by default, or `gpu`); the
# finite differences always run on the host, in float64.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from minicount import data, layers
from minicount.backend import resolve_device, to_device, to_numpy
from minicount.notebook import check_exercise, save_figure

DEVICE = resolve_device(os.environ.get("MINICOUNT_DEVICE", "cpu"))
np.set_printoptions(precision=4, suppress=True)


# %% [markdown]
# ## 1. What a backward function computes
#
# Somewhere downstream of the layer there is a scalar loss $L$. For any array `A` in the
# computation we write `dA` for $\partial L / \partial A$: an array **of the same shape as
# `A`**, entry by entry the derivative of $L$ with respect to that entry of `A`.
#
# A layer does not know what $L$ is. All it is ever told is `dout`, the gradient of the
# loss with respect to its output; its backward function turns that into the gradients
# with respect to each of its inputs, using what the forward pass saved (the *cache*):
#
#     out, cache = forward(x, W_Q, W_K, W_V, W_O)
#     dx, dW_Q, dW_K, dW_V, dW_O = backward(dout, cache)
#
# To test a backward function we may pick any $L$ we like. The convenient choice is
# $L = \sum_{t,i} G_{ti}\,\text{out}_{ti}$ for a fixed random array `G` the shape of `out`:
# then `dout = G` exactly, and every entry of the output takes part.
#
# ## 2. The forward pass, keeping a cache
#
# One head on one string, as in tutorial 2, with the steps numbered. The backward pass
# will visit them in reverse order, 5 to 1.


# %%
def causal_softmax(scores):
    """Row-wise softmax over keys j <= t. scores [T, T] -> pattern [T, T]."""
    allowed = np.tril(np.ones(scores.shape, dtype=bool))  # [T, T]
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [T, T]
    return weights / weights.sum(axis=-1, keepdims=True)


def head_forward(x, W_Q, W_K, W_V, W_O):
    """x [T, d_model], W_Q/W_K/W_V [d_model, d_head], W_O [d_head, d_model] -> out [T, d_model]."""
    scale = 1.0 / np.sqrt(W_Q.shape[1])
    q, k, v = x @ W_Q, x @ W_K, x @ W_V  # 1. each [T, d_model] @ [d_model, d_head] -> [T, d_head]
    scores = (q @ k.T) * scale  # 2. [T, d_head] @ [d_head, T] -> [T, T]
    pattern = causal_softmax(scores)  # 3. [T, T], rows sum to 1, zero above the diagonal
    z = pattern @ v  # 4. [T, T] @ [T, d_head] -> [T, d_head]
    out = z @ W_O  # 5. [T, d_head] @ [d_head, d_model] -> [T, d_model]
    cache = dict(x=x, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, q=q, k=k, v=v, pattern=pattern, z=z)
    return out, cache


tokens = data.encode("01121")  # [T] = [6]
T, d_model, d_head = len(tokens), 4, 3
rng = np.random.default_rng(0)
x = rng.standard_normal((data.V, d_model))[tokens]  # [T, d_model], float64
W_Q, W_K, W_V = (rng.standard_normal((d_model, d_head)) for _ in range(3))  # [d_model, d_head]
W_O = rng.standard_normal((d_head, d_model))  # [d_head, d_model]
out, cache = head_forward(x, W_Q, W_K, W_V, W_O)
G = rng.standard_normal(out.shape)  # [T, d_model]: L = sum(G * out), so dout = G
print("x", x.shape, " out", out.shape, " G", G.shape, " L =", float((G * out).sum()))

# %% [markdown]
# ## 3. The one rule you need: a matrix product
#
# Steps 1, 2, 4 and 5 are all matrix products $Y = AB$ with `A [n, k]`, `B [k, m]`,
# `Y [n, m]`. Entry by entry, $Y_{ij} = \sum_k A_{ik} B_{kj}$, so $A_{ik}$ affects the
# whole row $i$ of $Y$ and, by the chain rule,
#
# $$ \frac{\partial L}{\partial A_{ik}} = \sum_j \frac{\partial L}{\partial Y_{ij}}\, B_{kj}
#    \quad\Longrightarrow\quad dA = dY\, B^\top, \qquad\text{and likewise}\qquad dB = A^\top dY. $$
#
# A memory aid: `dA` must have the shape of `A`, `[n, k]`, and the only way to make
# `[n, k]` out of `dY [n, m]` and `B [k, m]` is `dY @ B.T`. The shapes choose the formula.
#
# ## 4. The backward pass, step by step
#
# **Step 5.** `out = z @ W_O`, so by the rule:
#
#     dz   = dout @ W_O.T      # [T, d_model] @ [d_model, d_head] -> [T, d_head]
#     dW_O = z.T @ dout        # [d_head, T] @ [T, d_model]       -> [d_head, d_model]
#
# **Step 4.** `z = pattern @ v`, so:
#
#     dpattern = dz @ v.T      # [T, d_head] @ [d_head, T] -> [T, T]
#     dv       = pattern.T @ dz  # [T, T] @ [T, d_head]    -> [T, d_head]
#
# Read `dv` row by row: $dv_j = \sum_t \text{pattern}_{tj}\, dz_t$. Key `j` hands its
# value to every query that attends to it, so its gradient collects from all of them.
#
# **Step 3: the softmax.** This is the step that takes thought. The softmax acts on each
# row separately, so take one row: scores $s$ and pattern $p$, with
# $p_i = e^{s_i} / \sum_k e^{s_k}$. By the quotient rule,
#
# $$ \frac{\partial p_i}{\partial s_j} = p_i\,(\delta_{ij} - p_j): $$
#
# raising $s_j$ raises $p_j$ (the $\delta_{ij}$ term) and, through the shared denominator,
# lowers every $p_i$ in proportion to its size (the $-p_i p_j$ term). The chain rule sums
# over the outputs $i$:
#
# $$ ds_j = \sum_i dp_i\, p_i (\delta_{ij} - p_j) = p_j\, dp_j - p_j \sum_i p_i\, dp_i
#         = p_j \Big( dp_j - \sum_i p_i\, dp_i \Big). $$
#
# For the whole `[T, T]` array, one row per query, that is
#
#     dscores = pattern * (dpattern - (pattern * dpattern).sum(axis=-1, keepdims=True))
#
# The matrix of all $\partial p_i / \partial s_j$ is the Jacobian $J = \mathrm{diag}(p) - p p^\top$;
# the formula is $J^\top dp$ (a *Jacobian-vector product*) computed without ever building
# `J`, in $O(T)$ per row instead of $O(T^2)$. Let us check that on one row:

# %%
t = 4  # one query row
p = cache["pattern"][t]  # [T]
dp = rng.standard_normal(T)  # [T]: some upstream gradient for this row
J = np.diag(p) - np.outer(p, p)  # [T, T]: J[i, j] = d p_i / d s_j
print("J.T @ dp:   ", J.T @ dp)
print("the formula:", p * (dp - (p * dp).sum()))
assert np.allclose(J.T @ dp, p * (dp - (p * dp).sum()))

# %% [markdown]
# Two details. The masked entries have $p_j = 0$, so their `dscores` is exactly 0: scores
# that were replaced by $-\infty$ had no effect, and get no gradient; the mask itself needs
# no backward step. And each row of `dscores` sums to zero, since
# $\sum_j p_j\,dp_j - (\sum_j p_j)\sum_i p_i\,dp_i = 0$ when $\sum_j p_j = 1$: adding a
# constant to a whole row of scores does not change the softmax, so the gradient can have
# no component along that direction. Keep this in mind for section 7.
#
# **Step 2.** `scores = (q @ k.T) * scale` with `scale = 1/sqrt(d_head)`. The scale
# multiplies every score, so it multiplies every gradient; then the matrix rule, with
# `k.T` in the place of `B`:
#
#     dq = (dscores * scale) @ k      # [T, T] @ [T, d_head] -> [T, d_head]
#     dk = (dscores * scale).T @ q    # [T, T] @ [T, d_head] -> [T, d_head]
#
# **Step 1.** `q = x @ W_Q`, `k = x @ W_K`, `v = x @ W_V`. Each weight gets the matrix
# rule once (`dW_Q = x.T @ dq` and so on). But `x` was used **three** times, and a variable
# that fans out to several places collects the gradient from each of them:
#
#     dx = dq @ W_Q.T + dk @ W_K.T + dv @ W_V.T    # [T, d_model]
#
# (In a full transformer `x` is also carried past the layer by the residual connection,
# which adds `dout` to `dx` once more; that happens in `model.backward`, not here.)
#
# All of it together, with each step under the forward line it differentiates:


# %%
def softmax_backward(dpattern, pattern):
    """dscores [T, T] from dpattern [T, T], for pattern = causal_softmax(scores)."""
    return pattern * (dpattern - (pattern * dpattern).sum(axis=-1, keepdims=True))


def head_backward(dout, cache, softmax_backward=softmax_backward):
    """(dx, dW_Q, dW_K, dW_V, dW_O) from dout [T, d_model], in reverse order of the forward."""
    c = cache
    scale = 1.0 / np.sqrt(c["W_Q"].shape[1])
    # 5. out = z @ W_O
    dz = dout @ c["W_O"].T  # [T, d_model] @ [d_model, d_head] -> [T, d_head]
    dW_O = c["z"].T @ dout  # [d_head, T] @ [T, d_model] -> [d_head, d_model]
    # 4. z = pattern @ v
    dpattern = dz @ c["v"].T  # [T, d_head] @ [d_head, T] -> [T, T]
    dv = c["pattern"].T @ dz  # [T, T] @ [T, d_head] -> [T, d_head]
    # 3. pattern = causal_softmax(scores)
    dscores = softmax_backward(dpattern, c["pattern"])  # [T, T]
    # 2. scores = (q @ k.T) * scale
    dq = (dscores * scale) @ c["k"]  # [T, T] @ [T, d_head] -> [T, d_head]
    dk = (dscores * scale).T @ c["q"]  # [T, T] @ [T, d_head] -> [T, d_head]
    # 1. q, k, v = x @ W_Q, x @ W_K, x @ W_V; x fans out to all three, so its gradients add
    dW_Q, dW_K, dW_V = c["x"].T @ dq, c["x"].T @ dk, c["x"].T @ dv  # each [d_model, d_head]
    dx = dq @ c["W_Q"].T + dk @ c["W_K"].T + dv @ c["W_V"].T  # [T, d_model]
    return dx, dW_Q, dW_K, dW_V, dW_O


grads = head_backward(G, cache)
for name, g in zip(("dx", "dW_Q", "dW_K", "dW_V", "dW_O"), grads, strict=True):
    print(f"{name:5} {g.shape}")

# %% [markdown]
# Every gradient has the shape of the thing it is the gradient of. That is necessary, not
# sufficient. Next, the check that can actually fail.
#
# ## 5. Finite differences
#
# For a single number $\theta$ inside any of the inputs, the **central difference**
#
# $$ \frac{L(\theta + h) - L(\theta - h)}{2h} = \frac{\partial L}{\partial \theta} + O(h^2) $$
#
# needs nothing but the forward pass. Doing it for every entry of every input gives the
# whole gradient, slowly (two forward passes per entry), which is fine for a check on tiny
# shapes. Two choices matter:
#
# * **float64.** The difference $L(\theta+h) - L(\theta-h)$ subtracts two nearly equal
#   numbers, losing digits: the rounding error of the estimate is about
#   $\varepsilon |L| / h$, where $\varepsilon$ is the machine precision ($10^{-16}$ in
#   float64, $10^{-7}$ in float32). The truncation error grows like $h^2$. With $h = 10^{-5}$
#   in float64 both are around $10^{-10}$; in float32 the best $h$ still leaves an error
#   near $10^{-3}$–$10^{-4}$, too coarse to tell a small bug from noise. The figure below
#   measures this.
# * **A relative error.** Gradients can be large or small, so we compare
#   $\lVert a - b\rVert / (\lVert a\rVert + \lVert b\rVert)$: 0 for equal arrays, about 1
#   for unrelated ones. (A floor on the denominator keeps a gradient that is exactly 0 from
#   reading as an error of 1 because of noise near $10^{-11}$.)


# %%
def numerical_grad(loss, array, h=1e-5):
    """d loss() / d array by central differences, entry by entry (array is restored)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + h
        up = loss()
        array[index] = old - h
        down = loss()
        array[index] = old
        grad[index] = (up - down) / (2 * h)
    return grad


def rel_error(a, b):
    """|a - b| / max(|a| + |b|, 1e-8): 0 for equal arrays, about 1 for unrelated ones."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-8))


TOL = 1e-7  # a right gradient gives ~1e-10 here, a wrong one ~1e-2 or more
inputs = {"x": x, "W_Q": W_Q, "W_K": W_K, "W_V": W_V, "W_O": W_O}


def loss():
    return float((G * head_forward(**inputs)[0]).sum())


def gradient_errors(backward_fn):
    """Relative error of each gradient from backward_fn against finite differences."""
    out, cache = head_forward(**inputs)
    analytic = backward_fn(G, cache)
    return {
        name: rel_error(g, numerical_grad(loss, inputs[name]))
        for name, g in zip(inputs, analytic, strict=True)
    }


errors = gradient_errors(head_backward)
print("input   relative error")
for name, err in errors.items():
    print(f"{name:6}  {err:.1e}   {'ok' if err < TOL else 'WRONG'}")
assert all(err < TOL for err in errors.values())

# %% [markdown]
# All five agree with the finite differences to about ten digits.
#
# Here is the measurement behind the choice of float64 and $h$: the error of the central
# difference for one weight, `W_Q[0, 0]`, against the hand-derived gradient, as $h$ goes
# from $10^{-12}$ to $10^{-1}$, once in float64 and once with every array cast to float32.

# %%
exact = head_backward(G, cache)[1][0, 0]  # dW_Q[0, 0]
steps = np.logspace(-12, -1, 45)
curves = {}
for dtype in (np.float64, np.float32):
    cast = {name: a.astype(dtype) for name, a in inputs.items()}
    G_cast = G.astype(dtype)
    errs = []
    for h in steps:
        cast["W_Q"][0, 0] = inputs["W_Q"][0, 0] + dtype(h)
        up = (G_cast * head_forward(**cast)[0]).sum()
        cast["W_Q"][0, 0] = inputs["W_Q"][0, 0] - dtype(h)
        down = (G_cast * head_forward(**cast)[0]).sum()
        errs.append(abs(float(up - down) / (2 * h) - exact) / abs(exact))
    curves[np.dtype(dtype).name] = np.array(errs)
    at_1e5 = errs[int(np.argmin(np.abs(np.log(steps / 1e-5))))]
    print(f"{np.dtype(dtype).name}: relative error {at_1e5:.1e} at h = 1e-5")

fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
for name, errs in curves.items():
    ax.loglog(steps, np.maximum(errs, 1e-17), marker=".", label=name)
ax.axvline(1e-5, color="gray", ls=":", label="h = 1e-5 (used here)")
ax.set(
    xlabel="step h",
    ylabel="relative error of the central difference",
    title="rounding (left) against truncation (right)",
)
ax.legend()
save_figure(fig, "03_finite_difference_step.png")

# %% [markdown]
# The float64 curve is a V: to the right the $O(h^2)$ truncation error, to the left the
# rounding error, growing like $1/h$; its bottom, near $10^{-10}$, is close to $h = 10^{-5}$.
# The float32 curve is rounding noise almost everywhere: at $h = 10^{-5}$ it is off by about
# a percent, and even at its best (around $h = 10^{-3}$) it stays some five orders of
# magnitude above float64. A bug that changes a gradient by 0.1% would be invisible in
# float32. That is why the project's gradient tests run in float64.
#
# ## 6. The library agrees
#
# `layers.attention_backward(dout, cache)` is the same derivation for many heads and a
# batch (read it in `minicount/layers/attention.py`: the same five steps, in the same
# reverse order, each under a comment with its forward line). With `B = 1` and `H = 1` it
# must give our numbers. It runs here on `DEVICE`; the check is against our host result.

# %%
lib_inputs = to_device([x[None], W_Q[None], W_K[None], W_V[None], W_O[None]], DEVICE)
lib_out, lib_cache = layers.attention_forward(*lib_inputs)  # [1, T, d_model]
lib_grads = to_numpy(layers.attention_backward(to_device(G[None], DEVICE), lib_cache))
for name, ours, theirs in zip(inputs, grads, lib_grads, strict=True):
    print(f"{name:4} ({DEVICE}): max |ours - library| = {np.abs(ours - theirs[0]).max():.1e}")
    assert np.allclose(ours, theirs[0])

# %% [markdown]
# ## 7. A broken gradient, caught
#
# The most common slip in this derivation is to forget the second term of the softmax
# Jacobian, i.e. to differentiate $e^{s_j}$ and forget the denominator:
#
#     dscores = pattern * dpattern          # wrong: the "- sum" term is missing
#
# The shapes are right, the code runs, and training with it would even go somewhere. Let
# us give it to the check.


# %%
def softmax_backward_broken(dpattern, pattern):
    """The softmax backward without its -Σ term: the classic mistake."""
    return pattern * dpattern


broken_errors = gradient_errors(
    lambda dout, cache: head_backward(dout, cache, softmax_backward=softmax_backward_broken)
)
print("input   right      broken")
for name in inputs:
    flag = "ok" if broken_errors[name] < TOL else "WRONG"
    print(f"{name:6}  {errors[name]:.1e}   {broken_errors[name]:.1e}  {flag}")
assert any(err > 1e-3 for err in broken_errors.values())

# %% [markdown]
# Caught, and the table says *where*: `W_V` and `W_O` are still right, because their
# gradients are computed in steps 5 and 4, before the backward pass reaches the softmax;
# `x`, `W_Q` and `W_K` are wrong, because every path to them runs through step 3. Reading
# which gradients fail is often the quickest way to the bug.
#
# The cheap invariant from section 4 catches it too, without any finite differences: the
# right `dscores` has rows that sum to zero, the broken one does not.

# %%
dpattern = (G @ W_O.T) @ cache["v"].T  # [T, T], steps 5 and 4 of the backward
right_sums = softmax_backward(dpattern, cache["pattern"]).sum(axis=-1)  # [T]
broken_sums = softmax_backward_broken(dpattern, cache["pattern"]).sum(axis=-1)  # [T]
print("row sums of dscores, right: ", right_sums)
print("row sums of dscores, broken:", broken_sums)

fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
positions = np.arange(len(inputs))
ax.bar(positions - 0.2, [errors[n] for n in inputs], width=0.4, label="right backward")
ax.bar(
    positions + 0.2,
    [broken_errors[n] for n in inputs],
    width=0.4,
    label="softmax backward without its -Σ term",
)
ax.axhline(TOL, color="black", ls="--", lw=1, label=f"tolerance {TOL:g}")
ax.set_yscale("log")
ax.set_xticks(positions, [f"d{n}" for n in inputs])
ax.set(ylabel="relative error vs finite differences", title="a gradient check at work")
ax.legend(fontsize=8)
save_figure(fig, "03_gradient_check.png")

# %% [markdown]
# ### Exercise 3: sigmoid attention
#
# Some models replace the softmax by an element-wise sigmoid, with no normalisation:
#
# $$ \text{pattern}_{tj} = \sigma(\text{scores}_{tj}) \;\text{ for } j \le t, \qquad
#    \sigma(s) = \frac{1}{1 + e^{-s}}, $$
#
# and 0 above the diagonal, as before.
#
# Write its backward: `sigmoid_pattern_backward(dpattern, pattern)` returns `dscores`
# `[T, T]`. Hint: $\sigma'(s) = \sigma(s)(1 - \sigma(s))$, and each pattern entry now
# depends on its own score only. The check compares your answer with finite differences.
# When it passes, ask yourself why there is no "$-\sum$" term this time.


# %%
def sigmoid_pattern(scores):
    """scores [T, T] -> pattern [T, T]: sigmoid on j <= t, 0 above the diagonal."""
    allowed = np.tril(np.ones(scores.shape, dtype=bool))  # [T, T]
    return np.where(allowed, 1.0 / (1.0 + np.exp(-scores)), 0.0)


def sigmoid_pattern_backward(dpattern, pattern):
    """dscores [T, T] from dpattern [T, T], for pattern = sigmoid_pattern(scores)."""
    raise NotImplementedError("exercise 3: your code here")


def test_sigmoid_pattern_backward(fn):
    r = np.random.default_rng(7)
    for T_ in (1, 3, 6):
        scores = r.standard_normal((T_, T_)) * 2  # [T, T]
        G_ = r.standard_normal((T_, T_))  # [T, T]: L = sum(G * pattern)
        got = np.asarray(fn(G_, sigmoid_pattern(scores)))
        assert got.shape == (T_, T_), f"expected shape {(T_, T_)}, got {got.shape}"
        expected = numerical_grad(
            lambda s=scores, g=G_: float((g * sigmoid_pattern(s)).sum()), scores
        )
        err = rel_error(got, expected)
        assert err < TOL, f"T={T_}: relative error {err:.1e} against finite differences"


check_exercise("exercise 3", sigmoid_pattern_backward, test_sigmoid_pattern_backward)

# %% [markdown]
# **What to take away.** A backward function maps `dout` to one gradient per input, each
# the shape of its input. Matrix products need one rule, `dA = dY Bᵀ`, `dB = Aᵀ dY`; a
# variable used several times sums its gradients; the softmax backward is
# `p * (dp - Σ p·dp)`, whose last term comes from the normalisation. Finite differences in
# float64 check any of it, and the pattern of which gradients fail points at the step that
# is wrong. Tutorial 4 lets `hypothesis` choose the shapes and values for such checks.
#
# ## Solutions
#
# The reference solution, run through the same check.


# %%
def sigmoid_pattern_backward_solution(dpattern, pattern):
    """dscores [T, T]; masked entries have pattern 0 and so get gradient 0."""
    return dpattern * pattern * (1.0 - pattern)  # element-wise: sigma' = sigma (1 - sigma)


assert check_exercise(
    "exercise 3, solution", sigmoid_pattern_backward_solution, test_sigmoid_pattern_backward
)
