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
# # Tutorial 5 · Training a counter, on the CPU or a GPU, and an ensemble in one go
#
# Tutorials 2–4 built and checked the pieces. Here they are put to work: train the study's
# default model on Count01 until it counts, watch the loss and the metrics on the way,
# save and reload it, and then train four models with different seeds in one vectorised
# run.
#
# **One setting picks the device.** Everything below runs on the CPU by default. With CuPy
# installed (`pip install -e ".[gpu]"`) and a CUDA GPU, run it with `MINICOUNT_DEVICE=gpu`:
#
#     MINICOUNT_DEVICE=gpu python tutorials/05_training.py
#
# The code does not change; `device=DEVICE` is passed to `mc.train`, which builds its arrays
# on that device, and hands the trained parameters back as NumPy arrays either way. (On the
# command line the same switch is `python -m minicount train --device gpu`.)
#
# `MINICOUNT_QUICK=1` shrinks every run to a few dozen small steps, for CI; the models then
# do not get far, but every cell runs.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minicount as mc
from minicount import data
from minicount.backend import resolve_device
from minicount.notebook import check_exercise, runs_folder, save_figure

RUNS = runs_folder()  # everything this tutorial writes goes under here
DEVICE = resolve_device(os.environ.get("MINICOUNT_DEVICE", "cpu"))
QUICK = os.environ.get("MINICOUNT_QUICK", "") not in ("", "0")

# the sizes of every run in this tutorial: (quick mode for CI, the real thing)
SETTINGS = (
    dict(batch_size=32, max_len=12, n_eval=256)
    if QUICK
    else dict(batch_size=256, max_len=32, n_eval=2048)
)
STEPS, ENSEMBLE_STEPS, EVAL_EVERY = (30, 20, 10) if QUICK else (400, 300, 25)
PRINT_EVERY = 10 if QUICK else 100  # steps between the progress lines of print_progress
SEEDS = [0, 1, 2, 3]
print(f"device {DEVICE}; {'quick' if QUICK else 'full'} mode: {STEPS} steps, {SETTINGS}")


def print_progress(step, params, history):
    """mc.train's callback after each evaluation: a line every PRINT_EVERY steps, on standard
    output (progress=True prints one at every evaluation, on standard error)."""
    if step % PRINT_EVERY:
        return
    entry = history["eval"][-1]
    shown = {}
    for key in ("loss", "l_acc", "s_acc"):
        value = np.atleast_1d(entry[key])  # one number, or one per ensemble member
        shown[key] = f"{value.mean():.4f}" + (f" (min {value.min():.4f})" if value.size > 1 else "")
    print(
        f"  step {step:>4}: loss {shown['loss']}  l-acc {shown['l_acc']}  "
        f"s-acc {shown['s_acc']}  ({entry['time']:.1f} s)"
    )


# %% [markdown]
# ## 1. One step, by hand
#
# Training repeats one step: draw a batch, compute the loss and its gradient with respect
# to every parameter (the forward pass, then the backward pass of tutorial 3 for every
# layer), and move each parameter a little against its gradient. `mc.loss_and_grads`
# does the middle part; its loss is the binary cross-entropy between the logits and the
# next-set targets of tutorial 1, averaged over the vocabulary and the real positions.
#
# Here is one step of plain gradient descent, `p ← p − lr · dp`, and the loss on the same
# batch before and after:

# %%
config = mc.ModelConfig()  # the study's model: d_model 32, 4 heads x d_head 8, 1 layer, NoPE
params = mc.init_params(config, seed=0)  # dict of float32 arrays
tokens, targets, mask = data.sample_batch(64, 16, np.random.default_rng(0))
loss, grads = mc.loss_and_grads(params, tokens, targets, mask, config)
print("tokens", tokens.shape, " targets", targets.shape, " mask", mask.shape)
for name in params:
    print(f"  {name:20} param {str(params[name].shape):13} grad {grads[name].shape}")
stepped = {name: params[name] - 0.5 * grads[name] for name in params}  # lr = 0.5
loss_after, _ = mc.loss_and_grads(stepped, tokens, targets, mask, config)
print(f"loss on this batch: before {loss:.4f}, after one step {loss_after:.4f}")

# %% [markdown]
# `mc.train` runs this loop with the AdamW optimiser (learning rate 3e-3 by default) on a
# fresh batch each step, and every `eval_every` steps scores the model on a fixed held-out
# set of strings (`data.eval_set`). It returns the trained parameters and a `history`:
# `history["loss"]` has the training loss of every step; `history["eval"]` is a list of
# dicts with `step`, `time` (seconds since the start) and the metrics:
#
# * **l-acc**: at each real position, the model's `EOS` decision is `logit > 0`; l-acc is
#   the fraction of positions where that decision equals the label $y_t$.
# * **s-acc**: the fraction of strings whose decision is right at *every* position. One
#   slip anywhere in a string of 30 symbols fails it, so s-acc is the demanding one.
# * **ROC AUC** of the `EOS` logit against the label: the probability that a random
#   position with $y_t = 1$ gets a higher logit than a random one with $y_t = 0$. It does
#   not care where the threshold is, only whether the logit separates the two classes.
# * `next_set_acc` (all six columns right at a position) and the held-out `loss`.
#
# ## 2. Train the default model

# %%
started = time.perf_counter()
params, history = mc.train(
    config,
    steps=STEPS,
    seed=0,
    device=DEVICE,
    eval_every=EVAL_EVERY,
    callback=print_progress,
    **SETTINGS,
)
single_seconds = time.perf_counter() - started
final = history["eval"][-1]
print(f"trained {STEPS} steps on {DEVICE} in {single_seconds:.1f} s")
print(
    f"final: l-acc {final['l_acc']:.4f}  s-acc {final['s_acc']:.4f}  "
    f"AUC {final['roc_auc']:.4f}  loss {final['loss']:.5f}"
)
print("parameters came back as", type(params["embed.W_E"]).__module__, "arrays")

# %% [markdown]
# `mc.train` calls `callback(step, params, history)` after each evaluation; ours printed
# a line now and then. (`progress=True` would print one at every evaluation, on standard
# error, which a notebook shows in red.) Now the curves.

# %%
evals = history["eval"]
eval_steps = [e["step"] for e in evals]
fig, (ax_loss, ax_metrics) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
ax_loss.plot(history["step"], history["loss"], lw=0.8, label="training batch")
ax_loss.plot(eval_steps, [e["loss"] for e in evals], marker=".", label="held-out set")
ax_loss.set(yscale="log", xlabel="step", ylabel="BCE loss", title="loss")
ax_loss.legend()
for key, label in (("roc_auc", "ROC AUC"), ("l_acc", "l-acc"), ("s_acc", "s-acc")):
    ax_metrics.plot(eval_steps, [e[key] for e in evals], marker=".", label=label)
ax_metrics.set(
    xlabel="step",
    ylabel="held-out metric",
    ylim=(0, 1.02),
    title="the EOS decision on held-out strings",
)
ax_metrics.legend(loc="lower right")
save_figure(fig, "05_training_curves.png")

# %% [markdown]
# What to look at: the ROC AUC climbs first — early on the `EOS` logit already *orders*
# positions correctly more often than not, before its sign is right. l-acc follows; s-acc
# comes last and rises steeply, because a string only counts once every one of its
# positions is right. In the full run all three reach (or come very close to) 1: the model
# counts. The loss keeps falling after the metrics are perfect: the logits keep moving
# away from the decision boundary, making the model more confident. (Train for longer and
# you may see the loss jump up for a few steps and come back down: with tiny gradients and
# a constant learning rate, Adam occasionally overshoots. `mc.train(..., schedule="cosine")`
# lets the learning rate decay instead.)
#
# ## 3. Does it count like the hand-built head?
#
# Tutorial 1's hand-built head made its `EOS` logit proportional to
# $(n_1 - n_0 - \frac12)/(t+1)$. The trained model found *some* solution; a first look at
# which one: plot its `EOS` logit at every held-out position against the lead
# $n_1 - n_0$ and against the uniform-attention average $(n_1 - n_0)/(t+1)$.

# %%
eval_tokens, eval_targets, eval_mask = data.eval_set(
    data.DataConfig(max_len=SETTINGS["max_len"], n_eval=SETTINGS["n_eval"])
)
eval_logits = mc.forward(params, eval_tokens, config)  # [N, T, V] on the host
symbols = eval_tokens < 3  # [N, T]
lead = np.cumsum((eval_tokens == data.ONE) & symbols, axis=1) - np.cumsum(
    (eval_tokens == data.ZERO) & symbols, axis=1
)  # [N, T]: n1 - n0
average = lead / np.arange(1, eval_tokens.shape[1] + 1)  # [N, T]: (n1 - n0) / (t + 1)
eos_logit = eval_logits[..., data.EOS][eval_mask]  # [real positions]
label = eval_targets[..., data.EOS][eval_mask] > 0.5  # [real positions]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
for ax, feature, name in ((axes[0], lead, "n1 - n0"), (axes[1], average, "(n1 - n0) / (t + 1)")):
    x_values = feature[eval_mask]
    for positive, colour in ((False, "tab:red"), (True, "tab:green")):
        chosen = label == positive
        ax.scatter(
            x_values[chosen],
            eos_logit[chosen],
            s=3,
            alpha=0.3,
            color=colour,
            label=f"y = {int(positive)}",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel=name, title=f"EOS logit against {name}")
axes[0].set_ylabel("EOS logit of the trained model")
axes[0].legend(markerscale=4)
save_figure(fig, "05_eos_logit_vs_count.png")
print(
    "correlation of the EOS logit with (n1 - n0)/(t + 1):",
    f"{np.corrcoef(average[eval_mask], eos_logit)[0, 1]:.3f}",
)

# %% [markdown]
# In the full run the two colours separate at zero on both axes: green (EOS allowed)
# above the line, red below. Against the raw lead the logit's spread grows with distance
# from zero; against the average the relation is tighter, the trace of the averaging that
# attention does. How the four heads share this job is the subject of the study:
# `hooks` on `blocks.0.attn.hook_pattern` and `hook_result` give you every
# head's pattern and contribution, as in tutorials 1 and 2.
#
# ### Exercise 5: s-acc by hand
#
# Write `sequence_accuracy(logits, targets, mask)` for a single model: `logits [N, T, V]`,
# `targets [N, T, V]`, `mask [N, T]` → the fraction of strings whose `EOS` decision
# (`logit > 0`) equals the label at every real position. The check compares it with
# `mc.evaluate` on the held-out set.


# %%
def sequence_accuracy(logits, targets, mask):
    """s-acc: logits [N, T, V], targets [N, T, V], mask [N, T] -> a float in [0, 1]."""
    raise NotImplementedError("exercise 5: your code here")


def test_sequence_accuracy(fn):
    reference = mc.evaluate(params, eval_tokens, eval_targets, eval_mask, config)["s_acc"]
    got = float(fn(eval_logits, eval_targets, eval_mask))
    assert abs(got - reference) < 1e-12, f"got {got:.6f}, mc.evaluate says {reference:.6f}"
    # and on logits made wrong at the last real position of every string
    wrong = eval_logits.copy()
    wrong[np.arange(len(wrong)), eval_mask.sum(1) - 1, data.EOS] = -1.0  # last position: no EOS
    got = float(fn(wrong, eval_targets, eval_mask))
    assert got == 0.0, f"every string ends in the language, so s-acc must be 0 here; got {got}"


check_exercise("exercise 5", sequence_accuracy, test_sequence_accuracy)

# %% [markdown]
# ## 4. Save, load, and strings longer than any seen in training
#
# `mc.save` writes the parameters and the config to one `.npz` file (plain arrays and
# JSON, no pickle); `mc.load` gives both back. The reloaded model must score exactly the
# same. Then a harder question: the model was trained on strings of length up to
# `max_len`; does it still count on strings between `max_len + 1` and `2 max_len`?

# %%
path = mc.save(RUNS / "tutorial05_counter.npz", params, config)
loaded, loaded_config = mc.load(path)
print("saved to", path, "- config survives the round trip:", loaded_config == config)
again = mc.evaluate(loaded, eval_tokens, eval_targets, eval_mask, loaded_config)
assert again["s_acc"] == final["s_acc"] and again["l_acc"] == final["l_acc"]
longer = data.eval_set(
    data.DataConfig(max_len=SETTINGS["max_len"], n_eval=SETTINGS["n_eval"]), long=True
)
long_metrics = mc.evaluate(loaded, *longer, loaded_config)
print(
    f"lengths {SETTINGS['max_len'] + 1}..{2 * SETTINGS['max_len']}: "
    f"l-acc {long_metrics['l_acc']:.4f}  s-acc {long_metrics['s_acc']:.4f}  "
    f"AUC {long_metrics['roc_auc']:.4f}"
)

# %% [markdown]
# The hand-built head of tutorial 1 was exact at every length. A trained model need not
# be: compare these numbers with the held-out ones above. Without positional embeddings
# the model cannot even tell how long a string is except through what attention averages
# over, so length generalisation is a real test of *how* it counts.
#
# ## 5. An ensemble of seeds in one go
#
# Different random initialisations can reach different solutions, so a study of "what the
# heads do" has to look at many seeds. `mc.train` takes a list of seeds and trains all the
# models **in one vectorised loop**: every parameter gets a leading model axis `[M]`, and
# the same layer code runs on it (a dense layer's `[B*T, d] @ [d, k]` becomes the batched
# `[M, B*T, d] @ [M, d, k]`). Member `i` starts from the weights and sees the batches that a
# single run with seed `i` would, so it is the same model, up to floating-point rounding
# (`tests/test_train.py` checks this).

# %%
started = time.perf_counter()
ensemble, ensemble_history = mc.train(
    config,
    steps=ENSEMBLE_STEPS,
    seed=SEEDS,
    device=DEVICE,
    eval_every=EVAL_EVERY,
    callback=print_progress,
    **SETTINGS,
)
ensemble_seconds = time.perf_counter() - started
print({name: array.shape for name, array in ensemble.items()})
print(
    f"{len(SEEDS)} models x {ENSEMBLE_STEPS} steps in {ensemble_seconds:.1f} s "
    f"({1000 * ensemble_seconds / (len(SEEDS) * ENSEMBLE_STEPS):.1f} ms per model-step; "
    f"the single run took {1000 * single_seconds / STEPS:.1f} ms per step)"
)
first_losses = np.array(ensemble_history["loss"][:3])  # [3 steps, M]
print("first three training losses, seed 0 alone:   ", np.round(history["loss"][:3], 6))
print("first three training losses, member 0 of the ensemble:", np.round(first_losses[:, 0], 6))

# %% [markdown]
# In the ensemble's history every number becomes a list with one entry per member:
# `ensemble_history["loss"][step]` is `[M]`, and so is each metric in
# `ensemble_history["eval"]`. The first losses of member 0 match the single run with seed 0
# (to float32 rounding). One curve per member:

# %%
member_loss = np.array(ensemble_history["loss"])  # [steps, M]
ensemble_evals = ensemble_history["eval"]
ensemble_steps = [e["step"] for e in ensemble_evals]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
for i, seed in enumerate(SEEDS):
    colour = f"C{i}"
    axes[0].plot(
        ensemble_history["step"], member_loss[:, i], lw=0.8, color=colour, label=f"seed {seed}"
    )
    for ax, key in ((axes[1], "l_acc"), (axes[2], "s_acc")):
        ax.plot(ensemble_steps, [e[key][i] for e in ensemble_evals], marker=".", color=colour)
axes[0].set(yscale="log", xlabel="step", ylabel="training loss", title="loss per member")
axes[0].legend()
axes[1].set(xlabel="step", ylabel="l-acc", ylim=(0, 1.02), title="l-acc per member")
axes[2].set(xlabel="step", ylabel="s-acc", ylim=(0, 1.02), title="s-acc per member")
save_figure(fig, "05_ensemble_curves.png")
last = ensemble_evals[-1]
for i, seed in enumerate(SEEDS):
    print(
        f"seed {seed}: l-acc {last['l_acc'][i]:.4f}  s-acc {last['s_acc'][i]:.4f}  "
        f"AUC {last['roc_auc'][i]:.4f}"
    )

# %% [markdown]
# What to look at: the members learn at visibly different speeds, although they differ
# only in their random initial weights and in which random strings they see. That spread
# is why the study reports statistics over many seeds rather than one model's story.
# `mc.evaluate(ensemble, ...)` scores all members at once (each metric an array `[M]`),
# and `mc.member(ensemble, i)` is member `i` as an ordinary single model (`mc.members`:
# all of them, `mc.stack`: single models back into an ensemble).
# On the command line:
#
#     python -m minicount train --seeds 0-7 --out runs/ens.npz        # add --device gpu
#
# **What to take away.** One call trains a model (`mc.train(config, ...)`) or a whole
# ensemble (`seed=[...]`), on whichever device `device=` names; the history holds the loss
# of every step and the held-out metrics; AUC, then l-acc, then s-acc is the usual order of
# arrival.
#
# ## Solutions
#
# The reference solution, run through the same check.


# %%
def sequence_accuracy_solution(logits, targets, mask):
    """s-acc: logits [N, T, V], targets [N, T, V], mask [N, T] -> a float in [0, 1]."""
    right = (logits[..., data.EOS] > 0) == (targets[..., data.EOS] > 0.5)  # [N, T]
    return float((right | ~mask).all(axis=-1).mean())  # padding never counts against a string


assert check_exercise("exercise 5, solution", sequence_accuracy_solution, test_sequence_accuracy)
