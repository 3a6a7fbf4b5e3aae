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
# # Tutorial 4 · Property-based tests of gradients
#
# Tutorial 3 checked a backward pass at one shape with one set of values. Many gradient
# bugs hide from such a check: they show only with a single key, or with two heads, or
# when a token appears twice. Rather than guess those cases, we can state a **property**
# that must hold for *every* input — "the hand-written gradient equals the finite
# difference" — and let a library search for an input that breaks it. When it finds one,
# it **shrinks** it to the simplest input that still fails, which usually names the bug.
#
# The library is [hypothesis](https://hypothesis.readthedocs.io). minicount's own
# `tests/test_gradients.py` is built this way; this tutorial takes it apart. It needs the
# test extra: `pip install -e ".[test]"`. It runs on the CPU, in float64 (finite
# differences need it, see tutorial 3); `MINICOUNT_QUICK=1` runs fewer examples.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from minicount import data, layers, notebook
from minicount.notebook import runs_folder, save_figure

try:
    import hypothesis.extra.numpy as hnp
    from hypothesis import HealthCheck, find, given, settings
    from hypothesis import strategies as st
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # "from None": IPython 9 cannot show a chained SystemExit
    raise SystemExit("skip: this tutorial needs hypothesis: pip install -e '.[test]'") from None


RUNS = runs_folder()  # everything this tutorial writes goes under here
set_hypothesis_home_dir(RUNS / ".hypothesis")  # its example database, not in the working folder
QUICK = os.environ.get("MINICOUNT_QUICK", "") not in ("", "0")
MAX_EXAMPLES = 10 if QUICK else 60


def falsifying_example(failure):
    """The shrunk inputs that hypothesis attaches to a failure as notes (call and draws)."""
    notes = [n for n in getattr(failure, "__notes__", []) if n.startswith(("Falsifying", "Draw"))]
    return "\n".join(notes) if notes else "(no falsifying example attached)"


def check_exercise(name, attempt, test):
    """minicount.notebook.check_exercise, with hypothesis's falsifying example on a failure."""
    return notebook.check_exercise(name, attempt, test, explain=falsifying_example)


# %% [markdown]
# ## 1. Strategies, `@given`, and shrinking
#
# A **strategy** describes a set of values and how to draw from it:
# `st.integers(1, 4)`, `st.floats(-2, 2, allow_nan=False)`, `st.sampled_from([(), (2,)])`,
# and for NumPy `hnp.arrays(np.float64, (B, T, d), elements=st.floats(...))`.
# `@given(...)` turns a function into a test: calling it runs the body on many draws and
# raises the first failure. Let us just record what it draws. The `settings` ask for 30
# examples, the same draws on every run of this file (`derandomize=True`, so the page reads
# the same each time), no example database on disk (`database=None`; in a real test suite
# the database is useful: it replays the last failure first) and no time limit per example
# (`deadline=None`: finite differences are slow).

# %%
QUIET = settings(
    database=None, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # shared by every test here
drawn_shapes = []


@settings(QUIET, max_examples=30)
@given(B=st.integers(1, 4), T=st.integers(1, 5))
def record_shapes(B, T):
    drawn_shapes.append((B, T))


record_shapes()
print(f"{len(drawn_shapes)} draws of (B, T):", drawn_shapes)

# %% [markdown]
# Only 20 draws, although 30 were asked for: there are just 4 × 5 = 20 pairs, and
# hypothesis noticed that it had tried them all. It began with the simplest, `(1, 1)`: one
# string of one position, the case where a surprising number of bugs live. Now arrays:

# %%
drawn_arrays = []


@settings(QUIET, max_examples=8)
@given(x=hnp.arrays(np.float64, (2, 3), elements=st.floats(-2, 2, allow_nan=False)))
def record_arrays(x):
    drawn_arrays.append(x)


record_arrays()
for x in drawn_arrays[:5]:
    print(x.ravel())

# %% [markdown]
# Not what `rng.uniform(-2, 2)` would give: an array of zeros, numbers extremely close to
# zero (some subnormal, far below anything a normal draw produces), the same value
# repeated. Hypothesis leans towards such values on purpose: they make sums cancel, softmax
# rows tie and divisions blow up, which is where numerical code breaks.
#
# **Shrinking.** When hypothesis finds an input that fails, it does not report the messy
# random draw that failed first. It tries smaller and simpler variants (shorter lists,
# smaller numbers, fewer dimensions) and keeps any that still fail, until none of its
# simplifications works. `hypothesis.find(strategy, condition)` runs this search on its
# own and returns the simplest value that satisfies `condition`. For example, the
# simplest list of token ids that contains some id twice:

# %%
repeat = find(
    st.lists(st.integers(0, data.V - 1)), lambda ids: len(set(ids)) < len(ids), settings=QUIET
)
print("simplest list with a repeated id:", repeat)

# %% [markdown]
# `[0, 0]`: as short as possible, and the smallest values possible. Keep it in mind for
# section 3.
#
# ## 2. The property: hand-written gradients match finite differences
#
# The same two tools as in tutorial 3, and one function that checks any layer written as a
# forward/backward pair: with a random `G` the shape of the output, the loss is
# $L = \sum G \odot \text{out}$, so `dout = G`, and each input's gradient from the backward
# function is compared with central differences.


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
    """|a - b| / max(|a| + |b|, 1e-3): 0 for equal arrays, about 1 for unrelated ones.

    The floor is higher than tutorial 3's: hypothesis draws many inputs near zero, whose
    gradients are tiny, and there the finite differences' rounding noise (~1e-11) would
    read as a large relative error. Below norm 1e-3 the comparison is absolute.
    """
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-3))


TOL = 1e-6  # right gradients give 1e-11..1e-8; wrong ones 1e-2..1


def gradient_errors(forward, backward, inputs, G):
    """{name: relative error} for each float input of forward(**inputs) -> (out, cache)."""
    out, cache = forward(**inputs)
    grads = backward(G, cache)  # one gradient per float input, in order
    grads = grads if isinstance(grads, tuple) else (grads,)
    floats = {name: a for name, a in inputs.items() if np.issubdtype(a.dtype, np.floating)}
    errors = {}
    for (name, array), grad in zip(floats.items(), grads, strict=True):
        numeric = numerical_grad(lambda: float((forward(**inputs)[0] * G).sum()), array)
        errors[name] = rel_error(grad, numeric)
    return errors


# %% [markdown]
# Now the property for `layers.attention_forward` / `attention_backward`. The shapes are
# drawn first (batch `B`, length `T`, widths, heads); `st.data()` then lets the body draw
# arrays whose shapes depend on them. Every example's errors are kept for a figure.


# %%
def values(shape, scale=2.0):
    """A strategy for float64 arrays of the given shape with entries in [-scale, scale]."""
    return hnp.arrays(np.float64, shape, elements=st.floats(-scale, scale, allow_nan=False))


attention_runs = []  # (T, H, worst relative error) per example


@settings(QUIET, max_examples=MAX_EXAMPLES)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    d_model=st.integers(1, 4),
    H=st.integers(1, 3),
    d_head=st.integers(1, 3),
    data_=st.data(),
)
def attention_gradients_match(B, T, d_model, H, d_head, data_):
    inputs = {"x": data_.draw(values((B, T, d_model)))}
    for W in ("W_Q", "W_K", "W_V"):
        inputs[W] = data_.draw(values((H, d_model, d_head), scale=1.5))
    inputs["W_O"] = data_.draw(values((H, d_head, d_model), scale=1.5))
    G = data_.draw(values((B, T, d_model)))
    errors = gradient_errors(layers.attention_forward, layers.attention_backward, inputs, G)
    attention_runs.append((T, H, max(errors.values())))
    for name, err in errors.items():
        assert err < TOL, f"d{name}: relative error {err:.1e}"


attention_gradients_match()  # runs every example; raises if one fails
worst = max(err for _, _, err in attention_runs)
print(
    f"attention backward: {len(attention_runs)} examples passed, worst relative error {worst:.1e}"
)

# %% [markdown]
# Calling the decorated function *is* running the test: it returned quietly, so the
# property held for every draw. `pytest` does exactly this when it collects a `@given`
# test. The figure shows what was tried and how far inside the tolerance it stayed. The
# pile at the far left (plotted at 1e-17) is examples whose error is exactly 0: draws in
# which a whole weight matrix or `G` is zero, so that both sides are exactly zero. Such
# draws test little; it is worth knowing that a share of any property run is spent on
# them.

# %%
fig, (ax_shapes, ax_errors) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
Ts, Hs, errs = (np.array(column) for column in zip(*attention_runs, strict=True))
counts, _, _, _ = ax_shapes.hist2d(
    Ts, Hs, bins=[np.arange(0.5, 6), np.arange(0.5, 4)], cmap="Blues"
)  # counts [5, 3]: T by H
for (T_index, H_index), count in np.ndenumerate(counts):
    ax_shapes.text(T_index + 1, H_index + 1, int(count), ha="center", va="center")
ax_shapes.set(
    xlabel="T (positions)", ylabel="H (heads)", yticks=[1, 2, 3], title="examples tried per shape"
)
ax_errors.hist(np.log10(np.maximum(errs, 1e-17)), bins=20)
ax_errors.axvline(np.log10(TOL), color="black", ls="--", label=f"tolerance {TOL:g}")
ax_errors.set(
    xlabel="log10 worst relative error of an example",
    ylabel="examples",
    title="attention backward vs finite differences",
)
ax_errors.legend()
save_figure(fig, "04_hypothesis_draws.png")

# %% [markdown]
# ## 3. A bug that most inputs do not reveal
#
# The embedding looks up one row of `W_E [V, d_model]` per token:
# `x[b, t] = W_E[tokens[b, t]]`, so `x` is `[B, T, d_model]`. In the backward pass, the
# row `W_E[v]` was copied to every position holding token `v`, so its gradient is the
# **sum** of those positions' gradients:
#
# $$ dW_E[v] = \sum_{(b, t):\ \text{tokens}_{bt} = v} dx_{bt}. $$
#
# NumPy's fancy-index assignment, `dW_E[tokens] = dx`, looks like it does this, but when
# an index appears more than once the assignment keeps one of the writes and drops the
# others; nothing is added up. (minicount's `layers.embedding_forward` sidesteps the issue
# by writing the lookup as `one_hot(tokens) @ W_E`, whose backward is a matrix product.)
# Here is the broken version as a forward/backward pair:


# %%
def lookup_forward(tokens, W_E):
    """x = W_E[tokens]: tokens [B, T] int, W_E [V, d_model] -> x [B, T, d_model]."""
    return W_E[tokens], (tokens, W_E.shape)


def lookup_backward_broken(dx, cache):
    """dW_E [V, d_model] from dx [B, T, d_model]: wrong when a token appears twice."""
    tokens, shape = cache
    dW_E = np.zeros(shape)
    dW_E[tokens] = dx  # assignment: repeated tokens overwrite instead of adding up
    return dW_E


# %% [markdown]
# A hand-picked check, the way one might write it after tutorial 3, on the string `BOS 0 1 2`:

# %%
hand_tokens = data.encode("012")[None]  # [B=1, T=4]: BOS 0 1 2, every token once
r = np.random.default_rng(0)
hand_inputs = {"tokens": hand_tokens, "W_E": r.standard_normal((data.V, 3))}
hand_G = r.standard_normal((1, 4, 3))  # [B, T, d_model]
hand_errors = gradient_errors(lookup_forward, lookup_backward_broken, hand_inputs, hand_G)
print(
    f"hand-picked check: relative error of dW_E {hand_errors['W_E']:.1e}",
    "(passes)" if hand_errors["W_E"] < TOL else "(fails)",
)

# %% [markdown]
# It passes: no token repeats in that string. Now the property, for every token array
# and every `W_E` and `G`:


# %%
def lookup_gradients_match(backward):
    """A hypothesis test: backward is the right gradient of lookup_forward, for all inputs."""

    @settings(QUIET, max_examples=MAX_EXAMPLES)
    @given(B=st.integers(1, 3), T=st.integers(1, 5), d_model=st.integers(1, 3), data_=st.data())
    def test(B, T, d_model, data_):
        tokens = data_.draw(hnp.arrays(np.int64, (B, T), elements=st.integers(0, data.V - 1)))
        inputs = {"tokens": tokens, "W_E": data_.draw(values((data.V, d_model)))}
        G = data_.draw(values((B, T, d_model)))
        errors = gradient_errors(lookup_forward, backward, inputs, G)
        assert errors["W_E"] < TOL, f"dW_E: relative error {errors['W_E']:.1e}"

    return test


try:
    lookup_gradients_match(lookup_backward_broken)()
except AssertionError as failure:
    print("the property failed:", failure)
    print(falsifying_example(failure))
else:
    raise RuntimeError("the property should have failed for lookup_backward_broken")

# %% [markdown]
# Read the counterexample from the top. The message is the assertion's: `dW_E` is wrong.
# Then the arguments, each shrunk as far as it would go while the test still failed:
#
# * `B=1` and `d_model=1` carry the comment `# or any other generated value`: hypothesis
#   checked that these do not matter for the failure.
# * `T=2` has no such comment: it matters. With `T=1` there is no room for a repeat.
# * The `Draw` lines are what the body drew through `data_`, in order: the tokens
#   `[[0, 0]]` — **the same token twice**, the smallest repeat there is, just as `find`
#   gave in section 1; then `W_E`, all zeros (the gradient of a lookup does not depend on
#   it); then `G`, all ones, the simplest gradient that is not zero. With it, row 0 of the
#   right `dW_E` is 1 + 1 = 2; the broken one writes 1 twice and keeps 1.
#
# Every part points at the cause: *a repeated token loses gradient*. (The exact printout
# can differ between versions of hypothesis; its shape will not.)
#
# ### Exercise 4: fix the embedding backward
#
# Write `lookup_backward(dx, cache)` so that the property holds. (Either `np.add.at`,
# which adds at repeated indices, or a one-hot matrix product like the library's.) The
# check runs the property on your function and, if it fails, prints hypothesis's shrunk
# counterexample.


# %%
def lookup_backward(dx, cache):
    """dW_E [V, d_model] from dx [B, T, d_model], for x = W_E[tokens]."""
    raise NotImplementedError("exercise 4: your code here")


def test_lookup_backward(fn):
    lookup_gradients_match(fn)()


check_exercise("exercise 4", lookup_backward, test_lookup_backward)

# %% [markdown]
# ## 4. In the project
#
# `tests/test_gradients.py` states this property for every layer in `minicount/layers/`,
# with shapes that include an optional leading model axis (an ensemble), and for the whole
# model's `loss_and_grads` under every combination of options (positional embedding,
# LayerNorm, MLP, one or two layers). Run it with
#
#     python -m pytest tests/test_gradients.py -q
#
# Useful flags: `--hypothesis-show-statistics` (how many examples, how long), and
# `--hypothesis-seed=N` (a different sequence of draws). `tests/conftest.py` sets the
# number of examples and turns off the deadline, since finite differences are slow.
#
# **What to take away.** A property says what must hold for all inputs; strategies say
# where to look; hypothesis looks hardest at the edges, and shrinks a failure to the
# smallest input that still fails, so the counterexample reads as a diagnosis. A fixed
# example can only find the bugs its author already suspected.
#
# ## Solutions
#
# The reference solution, run through the same check.


# %%
def lookup_backward_solution(dx, cache):
    """dW_E [V, d_model]: add each position's gradient into the row of its token."""
    tokens, shape = cache
    dW_E = np.zeros(shape)
    np.add.at(dW_E, tokens, dx)  # unbuffered: repeated tokens add up
    return dW_E


assert check_exercise("exercise 4, solution", lookup_backward_solution, test_lookup_backward)
