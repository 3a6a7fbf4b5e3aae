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
# # Tutorial 6 · Do heads compete or cooperate? The study in miniature
#
# Tutorial 5 trained models that count. This one opens them up. The default model has
# four attention heads, and each head's output is simply *added* into the `EOS` logit. So
# the question of the paper this project reproduces makes sense: do the four heads each
# count and vote, like a small ensemble (**cooperate**)? Or does one head end up doing the
# counting while the others contribute little or get in the way (**compete**)? Or do they
# split the job, none of them able to do it alone?
#
# We train three models that differ only in their random seed, and run on each the
# instruments of `minicount.analysis`, the same ones `python -m minicount reproduce` runs
# over many seeds and settings:
#
# 1. direct logit attribution: the `EOS` logit as a sum of one term per head,
# 2. the attention patterns, with the tokens on the axes,
# 3. head ablation: keep only one head, or leave one out, replacing the others by zero or
#    by their mean output,
# 4. per-head *semantics* (does a head's term separate the classes at all?) against
#    *syntax* (does it land on the right side of the threshold?),
# 5. the weights with which the output layer aggregates the heads,
# 6. how each head weighs the tokens it attends to ($w_{01}$, $w_{02}$, `BOS`),
# 7. interventions: the model re-run with its attention or its value vectors edited.
#
# Every instrument reads the model through the forward pass's hooks and never changes a
# parameter. **Three seeds are not a study**: different seeds find different solutions,
# and the point here is to learn what to look at, not to settle the question.
#
# `MINICOUNT_DEVICE=gpu` trains and analyses on the GPU (with CuPy installed), with no
# other change; `MINICOUNT_QUICK=1` trains for a few steps only, for CI (the models then
# do not count yet, but every cell runs).

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minicount as mc
from minicount import analysis, data
from minicount.backend import resolve_device, to_device, to_numpy
from minicount.notebook import check_exercise, save_figure
from minicount.study.rows import BALANCED_W01, SEMANTIC_AUC, SUPPRESSED_W02

DEVICE = resolve_device(os.environ.get("MINICOUNT_DEVICE", "cpu"))
QUICK = os.environ.get("MINICOUNT_QUICK", "") not in ("", "0")

# the sizes of this tutorial: (quick mode for CI, the real thing)
SETTINGS = dict(batch_size=32, max_len=8) if QUICK else dict(batch_size=128, max_len=32)
STEPS = 30 if QUICK else 400
N_EVAL = 64 if QUICK else 1024  # held-out strings that every instrument is run on
SEEDS = [0, 1, 2]
EXAMPLE = "1020120121102211"[: SETTINGS["max_len"]]  # the string drawn in the figures
print(
    f"device {DEVICE}; {'quick' if QUICK else 'full'} mode: {len(SEEDS)} seeds x "
    f"{STEPS} steps, {SETTINGS}, {N_EVAL} held-out strings"
)


def print_progress(step, params, history):
    """mc.train's callback after each evaluation: the members' mean metrics on stdout."""
    entry = history["eval"][-1]
    l_acc, s_acc = np.mean(entry["l_acc"]), np.mean(entry["s_acc"])
    print(f"  step {step:>4}: mean l-acc {l_acc:.4f}  s-acc {s_acc:.4f}  ({entry['time']:.1f} s)")


# %% [markdown]
# ## 1. Three counters
#
# One call trains the three seeds as an ensemble (tutorial 5, section 5). The analysis
# works on one model at a time, so we take the members out, `mc.members(ensemble)`, and
# move each to `DEVICE` (on the CPU that is a no-op). The held-out strings are the fixed
# set `data.eval_set`; the instruments accept tokens on the parameters' device and
# targets and mask on the host.

# %%
config = mc.ModelConfig()  # d_model 32, 4 heads x d_head 8, one attention-only layer, NoPE
H = config.n_heads
started = time.perf_counter()
ensemble, history = mc.train(
    config,
    steps=STEPS,
    seed=SEEDS,
    device=DEVICE,
    eval_every=max(1, STEPS // 4),
    n_eval=min(N_EVAL, 512),
    callback=print_progress,  # a line per evaluation (progress=True: the same, on stderr)
    **SETTINGS,
)
print(
    f"trained {len(SEEDS)} models x {STEPS} steps on {DEVICE} in "
    f"{time.perf_counter() - started:.1f} s"
)
hosts = mc.members(ensemble)  # NumPy, one each
members = [to_device(host, DEVICE) for host in hosts]  # the same models on DEVICE
tokens, targets, mask = data.eval_set(
    data.DataConfig(max_len=SETTINGS["max_len"], n_eval=N_EVAL)
)  # [N, T], [N, T, V], [N, T]
tokens_d = to_device(tokens, DEVICE)  # [N, T]
labels = targets[..., data.EOS] > 0.5  # [N, T] y_t
for seed, member in zip(SEEDS, members, strict=True):
    m = mc.evaluate(member, tokens, targets, mask, config)  # moves the batch to the model
    print(f"seed {seed}: l-acc {m['l_acc']:.4f}  s-acc {m['s_acc']:.4f}  AUC {m['roc_auc']:.4f}")
model = members[0]  # the model we look at closely; the others come in for comparison

# %% [markdown]
# In the full run all three should count (l-acc and s-acc at or very near 1). Three
# models that behave the same from the outside; now the inside.
#
# ## 2. Direct logit attribution: the EOS logit as a sum over heads
#
# The default model has one layer, no MLP and no LayerNorm, so its logits are a plain sum
# of separate paths (tutorial 1, section 4): the direct path $x_t W_U$ of the token
# just read, one path per head, and the bias,
#
# $$ \text{logits}_t = x_t W_U + \sum_h \text{result}^h_t\, W_U + b_U,
#    \qquad \text{result}^h_t = \sum_{j \le t} A^h_{tj}\, x_j W_V^h W_O^h. $$
#
# `analysis.head_logit_contributions` records each head's `result` with the hook
# `blocks.0.attn.hook_result` and pushes it through the unembedding. The pieces must add
# up to the logits exactly, up to float32 rounding:

# %%
parts = to_numpy(analysis.head_logit_contributions(model, tokens_d, config))
for name, array in parts.items():
    print(f"{name:7} {array.shape}")
rebuilt = parts["heads"].sum(axis=0) + parts["direct"] + parts["bias"]  # [N, T, V]
print("max |heads + direct + bias - logits|:", np.abs(rebuilt - parts["logits"]).max())
assert np.allclose(rebuilt, parts["logits"], atol=1e-4)

# %% [markdown]
# Only the `EOS` column is hard, so from now on only it matters. Head `h`'s term there
# is its **contribution** $c_h(t)$; the direct path and the bias together are an
# **offset** that depends on the token at `t` only:
#
# $$ \text{EOS logit}_t = \text{offset}_t + \sum_h c_h(t), $$
#
# and the model's decision is $\text{EOS logit}_t > 0$.
#
# `analysis.eos_contributions` returns `c [H, N, T]` and `offset [N, T]`. Here they are
# for the example string, position by position:

# %%
c, offset = to_numpy(analysis.eos_contributions(model, tokens_d, config))  # [H, N, T], [N, T]
example = data.encode(EXAMPLE)[None]  # [1, T]
example_labels = ["BOS"] + list(EXAMPLE)
example_y = data.next_set_targets(example)[0][0, :, data.EOS]  # [T]
c_ex, offset_ex = to_numpy(analysis.eos_contributions(model, to_device(example, DEVICE), config))
c_ex, offset_ex = c_ex[:, 0], offset_ex[0]  # [H, T], [T]
eos_ex = offset_ex + c_ex.sum(axis=0)  # [T]
print(" t read " + " ".join(f"   c_{h}" for h in range(H)) + "  offset  EOS logit  y")
for t, label in enumerate(example_labels):
    row = " ".join(f"{v:+6.2f}" for v in c_ex[:, t])
    print(f"{t:2} {label:>4} {row}  {offset_ex[t]:+6.2f}  {eos_ex[t]:+8.2f}   {int(example_y[t])}")

fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
x = np.arange(len(example_labels))
width = 0.8 / (H + 1)
for h in range(H):
    ax.bar(x + (h - H / 2) * width, c_ex[h], width, label=f"c_{h}", color=f"C{h}")
ax.bar(x + H / 2 * width, offset_ex, width, label="offset", color="0.6")
ax.plot(x, eos_ex, "k.-", label="EOS logit (the sum)")
for t in x:  # green background where EOS is allowed
    ax.axvspan(t - 0.5, t + 0.5, color="tab:green" if example_y[t] else "tab:red", alpha=0.07)
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(x, example_labels)
ax.set(
    xlabel="token just read",
    ylabel="contribution to the EOS logit",
    title=f"seed {SEEDS[0]}: the EOS logit split by head (green: EOS allowed, red: not)",
)
ax.legend(ncol=H + 2, fontsize=8, loc="upper left")
save_figure(fig, "06_logit_attribution.png")

# %% [markdown]
# What to look at: the black line crosses zero where the background changes colour (the
# model is right). Which coloured bars move with it? A head whose bar goes up after each
# `1` and down after each `0` is *tracking the count*; one whose bar barely moves adds
# little but a constant; bars of opposite sign cancel. A head can also carry a large
# constant part that the offset or another head undoes, which is why the ablations below
# distinguish replacing a head by zero from replacing it by its mean.
#
# ## 3. Attention patterns
#
# Where does each head look? `analysis.attention_patterns` records the hook
# `blocks.0.attn.hook_pattern` and returns `[n_layers, B, H, T, T]`. One heat map per
# head for the example string, queries down, keys across:

# %%
pattern = to_numpy(analysis.attention_patterns(model, to_device(example, DEVICE), config))
pattern = pattern[0, 0]  # [H, T, T]: layer 0, the one string
fig, axes = plt.subplots(1, H, figsize=(3.4 * H, 3.6), layout="constrained")
for h, ax in enumerate(axes):
    image = ax.imshow(pattern[h], cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(example_labels)), example_labels, fontsize=6, rotation=90)
    ax.set_yticks(range(len(example_labels)), example_labels, fontsize=6)
    ax.set(xlabel="key", title=f"head {h}")
axes[0].set_ylabel("query")
fig.colorbar(image, ax=axes, fraction=0.02, label="attention weight")
fig.suptitle(f"seed {SEEDS[0]}: attention patterns on '{EXAMPLE}'")
save_figure(fig, "06_attention_patterns.png")
for h in range(H):
    on = {
        name: pattern[h][:, example[0] == token].sum(axis=1).mean()
        for name, token in (
            ("BOS", data.BOS),
            ("1s", data.ONE),
            ("0s", data.ZERO),
            ("2s", data.TWO),
        )
    }
    print(
        f"head {h}: mean weight over the queries on "
        + ", ".join(f"{k} {v:.2f}" for k, v in on.items())
    )

# %% [markdown]
# What to look at, column by column: a head that counts the way tutorial 1's hand-built
# head did spreads its weight evenly over the `0` and `1` columns and ignores the `2`
# columns (they are noise), with some weight parked on `BOS`. Other heads may light up
# only the `1` columns, or only the `0` columns, or the `2`s, or sit almost entirely on
# `BOS`. A head that attends to the 1s alone is not useless: its output says "what
# fraction of what I see are 1s", and two such one-sided heads can be combined
# downstream. Section 7 puts numbers on these pictures.
#
# ## 4. Head ablation: what happens without a head?
#
# **Ablating** a head means replacing its output, `result^h` in the hook
# `blocks.0.attn.hook_result`, by something else, and rerunning:
#
# * **zero ablation** replaces it by 0: the head's signal *and* its average level go;
# * **mean ablation** replaces it by the head's mean output over the held-out positions:
#   only the signal goes; the average level, which the threshold may rely on, stays.
#
# Because the `EOS` logit is a sum, keeping only head `h` with zero ablation leaves
# $\text{offset} + c_h$. `analysis.ablated_logits` runs the hooked forward pass; it must
# agree with that sum:

# %%
for h in range(H):
    keep = [g == h for g in range(H)]
    only_h = to_numpy(analysis.ablated_logits(model, tokens_d, config, keep))[..., data.EOS]
    print(
        f"head {h} alone: max |hooked forward - (offset + c_{h})| = "
        f"{np.abs(only_h - (offset + c[h]))[mask].max():.2e}"
    )

# %% [markdown]
# `analysis.ablation_study` runs every variant in both modes: keep only one head, leave
# one head out, and every subset of heads, each scored with l-acc, s-acc and ROC AUC.

# %%
ablation = analysis.ablation_study(model, tokens_d, targets, mask, config)


def ablation_row(mode, kind, kept):
    """The row of ablation[mode] for this kind ('only', 'leave_out', 'subset') and kept heads."""
    return next(r for r in ablation[mode] if r["kind"] == kind and r["kept"] == list(kept))


print("l-acc / s-acc       keep only head h          leave head h out")
print("head          zero         mean         zero         mean")
for h in range(H):
    rest = [g for g in range(H) if g != h]
    cells = [
        ablation_row(mode, kind, kept)
        for kind, kept in (("only", [h]), ("leave_out", rest))
        for mode in ("zero", "mean")
    ]
    print(f"{h:4}   " + "   ".join(f"{r['l_acc']:.3f}/{r['s_acc']:.3f}" for r in cells))
print("\nthe best subset of each size (l-acc; zero ablation of the heads left out):")
for size in range(H + 1):
    best = max(
        (r for r in ablation["zero"] if r["kind"] == "subset" and len(r["kept"]) == size),
        key=lambda r: r["l_acc"],
    )
    print(f"  {size} head(s): {best['l_acc']:.4f}  keeping {best['kept']}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained", sharey=True)
full = ablation_row("zero", "subset", range(H))["l_acc"]
for ax, kind, title in (
    (axes[0], "only", "keep only head h"),
    (axes[1], "leave_out", "leave head h out"),
):
    for k, mode in enumerate(("zero", "mean")):
        values = [
            ablation_row(mode, kind, [h] if kind == "only" else [g for g in range(H) if g != h])[
                "l_acc"
            ]
            for h in range(H)
        ]
        ax.bar(np.arange(H) + (k - 0.5) * 0.38, values, 0.38, label=f"{mode} ablation")
    ax.axhline(full, color="black", lw=0.8, ls="--", label="all heads")
    ax.set_xticks(range(H), [f"head {h}" for h in range(H)])
    ax.set(title=title, ylim=(0, 1.2))
axes[0].set_ylabel("l-acc")
axes[1].legend(loc="upper center", ncol=3, fontsize=8)
fig.suptitle(f"seed {SEEDS[0]}: head ablation on the held-out strings")
save_figure(fig, "06_ablation.png")

# %% [markdown]
# How to read it. If the model were a **pure ensemble**, four interchangeable counters,
# leaving any one out would cost almost nothing, and keeping any one (mean ablation,
# so the threshold stays put) would still count fairly well. If **one head does the
# counting**, leaving *that* head out is a disaster and keeping it alone is nearly as good
# as the full model, while the other heads barely matter either way. If the heads **split
# the work**, no single head is enough, and several must be kept: the "best subset of
# each size" list shows how many (its 0-head row is the offset alone, a baseline that
# knows only the token just read). Note also the gap between zero and mean ablation:
# where mean ablation is much kinder, the ablated heads mainly provided a constant that
# the threshold depends on.
#
# ## 5. Semantics versus syntax
#
# A head's contribution can carry the information and still fail as a classifier on its
# own. Two questions per head:
#
# * **semantics**: does $c_h$ alone *separate* the two classes? Its ROC AUC against the
#   labels answers this for every threshold at once (1: some threshold separates them
#   perfectly; 0.5: no better than chance).
# * **syntax**: is it on the right side of the model's actual threshold? The l-acc and
#   s-acc of $\text{offset} + c_h$ (only head `h` kept) answer that, and so do those of
#   $\text{offset} + n_{\text{heads}}\, c_h$, the model we would have if every head were
#   a copy of head `h`: the **pure-ensemble hypothesis**. If the heads were copies,
#   $\sum_g c_g = n_{\text{heads}}\, c_h$ and this scaled score would be exactly the
#   model's.
#
# `analysis.head_semantics` computes all three per head:

# %%
semantics = [analysis.head_semantics(m, tokens_d, targets, mask, config) for m in members]
print(f"seed {SEEDS[0]}: head   AUC of c_h   alone: l-acc / s-acc   x{H}: l-acc / s-acc")
for row in semantics[0]:
    print(
        f"{row['head']:12}   {row['auc_alone']:10.4f}   {row['solo']['l_acc']:13.4f} / "
        f"{row['solo']['s_acc']:.4f}   {row['scaled']['l_acc']:10.4f} / "
        f"{row['scaled']['s_acc']:.4f}"
    )
print("\nthe AUC of every head, every seed:")
for seed, rows in zip(SEEDS, semantics, strict=True):
    print(f"  seed {seed}: " + "  ".join(f"h{r['head']} {r['auc_alone']:.3f}" for r in rows))

fig, axes = plt.subplots(2, H, figsize=(3.2 * H, 5.6), layout="constrained")
real = mask  # [N, T] the positions that count
for h, row in enumerate(semantics[0]):
    for ax, values, title in (
        (axes[0, h], c[h], f"head {h}: c_h alone, AUC {row['auc_alone']:.3f}"),
        (axes[1, h], offset + H * c[h], f"offset + {H} c_h: l-acc {row['scaled']['l_acc']:.3f}"),
    ):
        bins = np.linspace(values[real].min(), values[real].max() + 1e-6, 40)
        for positive, colour in ((False, "tab:red"), (True, "tab:green")):
            ax.hist(
                values[real & (labels == positive)],
                bins=bins,
                color=colour,
                alpha=0.55,
                label=f"y = {int(positive)}",
            )
        ax.set_title(title, fontsize=8)
        ax.set_yticks([])
    axes[1, h].axvline(0, color="black", lw=0.8)
axes[0, 0].legend(fontsize=7)
axes[0, 0].set_ylabel("positions (semantics)")
axes[1, 0].set_ylabel("positions (syntax)")
fig.suptitle(f"seed {SEEDS[0]}: each head's EOS contribution, by label")
save_figure(fig, "06_semantics_syntax.png")

# %% [markdown]
# Top row, semantics: a head whose red and green histograms do not overlap has AUC ≈ 1;
# it *knows* the answer at every position. Bottom row, syntax: the scaled score must put
# red left of the black line and green right of it. A head can separate the classes
# perfectly and still be shifted relative to zero (the model's other heads supply the
# missing shift), which shows as AUC 1 with a modest l-acc; compare with the
# keep-only-this-head *mean* ablation of section 4, which puts the others' average shift
# back. An AUC far *below* 0.5 is information too, with the sign flipped: that head's
# term is larger where `EOS` is not allowed. When several heads have a high AUC but their
# scaled accuracies fall well short of the model's, they are not copies of one counter:
# the pure-ensemble hypothesis fails for that model.
#
# ## 6. How the output layer weighs the heads
#
# The model adds the $c_h$ with weight 1 each, but the heads' scales differ: a head with a
# large spread shouts and a quiet head whispers. To compare like with like, standardise:
# $z_h = c_h / \sigma_h$, with $\sigma_h$ the standard deviation of $c_h$ over the
# held-out positions. The trained model then reads $\sum_h \sigma_h z_h$, i.e. it weighs
# the standardised heads by $\alpha_h = \sigma_h$. `analysis.aggregation_weights` compares
# three aggregations of the $z_h$, each on top of the fixed offset:
#
# * **trained**: the model itself ($\alpha_h = \sigma_h$);
# * **fitted**: a logistic regression of $y_t$ on the $z_h$, free weights $\alpha_h$ and a
#   bias: the best the heads' outputs allow with *any* weighting;
# * **uniform**: one shared scale for $\sum_h z_h$ and a bias, chosen for the highest
#   l-acc: the best *equal* vote (`"uniform_logloss"` is the logistic fit of the same
#   two numbers).
#
# The fit's bias is free; only the weights carry an L2 penalty (`agg["l2"]`, refitted over a
# range of strengths in `agg["l2_check"]`). The weights are reported as shares of their
# magnitudes, $|\alpha_h| / \sum|\alpha|$, with their signs apart, beside the uniform
# $1/n_{\text{heads}}$.
# Non-uniform aggregation shows as uniform < fitted ≈ trained.

# %%
aggregations = [analysis.aggregation_weights(m, tokens_d, targets, mask, config) for m in members]
for seed, agg in zip(SEEDS, aggregations, strict=True):
    fitted_alpha = agg["alpha_fitted"] or [float("nan")] * H
    print(
        f"seed {seed}: alpha fitted  "
        + " ".join(f"{a:+.3f}" for a in fitted_alpha)
        + f"   (uniform {1 / H:.3f} each; effective heads {agg['n_eff_fitted']:.2f})"
    )
    print("        alpha trained " + " ".join(f"{a:+.3f}" for a in agg["alpha_trained"]))
    print(
        "        l-acc / s-acc: "
        + "   ".join(
            f"{kind} {agg[kind]['l_acc']:.4f} / {agg[kind]['s_acc']:.4f}"
            for kind in ("uniform", "fitted", "trained")
        )
    )

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
width = 0.8 / len(SEEDS)
for i, (seed, agg) in enumerate(zip(SEEDS, aggregations, strict=True)):
    axes[0].bar(
        np.arange(H) + (i - 1) * width,
        agg["alpha_fitted"] or [np.nan] * H,
        width,
        label=f"seed {seed}",
    )
    for ax, key in ((axes[1], "l_acc"), (axes[2], "s_acc")):
        values = [agg[kind][key] for kind in ("uniform", "fitted", "trained")]
        ax.bar(np.arange(3) + (i - 1) * width, values, width, label=f"seed {seed}")
axes[0].axhline(1 / H, color="black", ls="--", lw=0.8, label=f"uniform 1/{H}")
axes[0].set_xticks(range(H), [f"head {h}" for h in range(H)])
axes[0].set(title="fitted weights alpha (normalised)", ylabel="share of the weight")
axes[0].legend(fontsize=8)
for ax, name in ((axes[1], "l-acc"), (axes[2], "s-acc")):
    ax.set_xticks(range(3), ["uniform", "fitted", "trained"])
    ax.set(title=f"{name} of the three aggregations", ylim=(0, 1.02))
save_figure(fig, "06_aggregation.png")

# %% [markdown]
# What to look at: how far the fitted weights are from the dashed line, and whether the
# same head number wins in every seed (it need not: head numbers are arbitrary labels, and
# each seed assigns the roles afresh). One head with nearly all the weight, and uniform
# voting far below fitted, is the "compete" picture: the output layer has learned to
# listen to one head. Weights near $1/n_{\text{heads}}$ with uniform ≈ fitted is the
# ensemble picture. A negative fitted weight means the best read-out would *subtract*
# that head's standardised term. "Effective heads" is $(\sum|\alpha|)^2/\sum\alpha^2$:
# 1 when one head has all the weight, $n_{\text{heads}}$ when all share equally.
#
# ### Exercise 6a: the uniform vote, by hand
#
# Compute the l-acc of the log-loss uniform vote yourself, from the contributions:
# write `uniform_l_acc(c, offset, targets, mask)` with `c [H, N, T]`, `offset [N, T]`,
# `targets [N, T, V]`, `mask [N, T]` (NumPy arrays) returning a float. The recipe:
#
# 1. over the real positions (`mask`), take each head's standard deviation $\sigma_h$ and
#    form $z_h = c_h / \sigma_h$;
# 2. fit $y_t$ on the single feature $\sum_h z_h$ with
#    `analysis.fit_logistic(X, y, offset=...)` (`X [n, 1]`, `y [n]`, `offset [n]`, one
#    row per real position); it returns a dict with the weight `"w"` (shape `[1]`) and
#    the bias `"b"`;
# 3. the score is $\text{offset} + b + w \sum_h z_h$; l-acc is the fraction of real
#    positions where `score > 0` equals the label.
#
# The check compares your number with
# `aggregation_weights(...)["uniform_logloss"]["l_acc"]`
# for each of the three models (to within 0.1%).


# %%
def uniform_l_acc(c, offset, targets, mask):
    """c [H, N, T], offset [N, T], targets [N, T, V], mask [N, T] -> l-acc of the uniform vote."""
    raise NotImplementedError("exercise 6a: your code here")


def test_uniform_l_acc(fn):
    for seed, member, agg in zip(SEEDS, members, aggregations, strict=True):
        c_m, offset_m = to_numpy(analysis.eos_contributions(member, tokens_d, config))
        got = float(fn(c_m, offset_m, targets, mask))
        expected = agg["uniform_logloss"]["l_acc"]
        assert abs(got - expected) < 1e-3, (
            f"seed {seed}: got {got:.5f}, the library says {expected:.5f}"
        )


check_exercise("exercise 6a", uniform_l_acc, test_uniform_l_acc)

# %% [markdown]
# ## 7. How each head weighs the tokens: $w_{01}$, $w_{02}$ and `BOS`
#
# A head's pattern can be summarised by how much weight it gives one key of token `b`
# compared with one key of token `a`, for a query holding token `q`:
#
# $$ w_{ab}(q) = \frac{\text{mean weight on one key of token } b}
#                     {\text{mean weight on one key of token } a}. $$
#
# **$w_{01} = 1$** means 1s and 0s are weighed alike, what a counter needs (the
# hand-built head of tutorial 1 had exactly that); **$w_{02} \ll 1$** means the 2s are
# pushed aside. Without positional embeddings, in the first layer, a score depends only on
# the query token and the key token, a $V \times V$ table per head,
# $S_h[q, k] = (W_E[q] W_Q^h) \cdot (W_E[k] W_K^h) / \sqrt{d_{head}}$, so
# $w_{ab}(q) = e^{S_h[q, b] - S_h[q, a]}$ exactly: the softmax's common denominator
# cancels. The weight on `BOS` depends on the whole prefix (how many other keys compete
# with it), so `analysis.attention_stats` measures it from the patterns; it also measures
# $w_{01}$ and $w_{02}$ from the patterns, as a check on the exact values.

# %%
stats = [analysis.attention_stats(m, tokens_d, mask, config) for m in members]
print(f"seed {SEEDS[0]} (per query token 0 / 1 / 2):")
for h in range(H):
    per = stats[0]["per_query"]
    print(
        f"  head {h}: w_01 "
        + " ".join(f"{v:9.3g}" for v in per["w_01"][h])
        + "   w_02 "
        + " ".join(f"{v:9.3g}" for v in per["w_02"][h])
        + "   BOS "
        + " ".join(f"{v:5.2f}" for v in per["bos_weight"][h])
    )
exact = np.array(stats[0]["per_query"]["w_01"])  # [H, 3] from the score table
measured = np.array(stats[0]["measured"]["w_01"])  # [H, 3] from the patterns
print(
    "largest relative difference, exact vs measured w_01:",
    f"{np.nanmax(np.abs(measured / exact - 1)):.1e}",
)

# %% [markdown]
# The two agree to rounding: with NoPE the table is the whole story. Now every head of
# every seed in one picture: $w_{01}$ across, $w_{02}$ up (log scales), the colour is the
# head's AUC from section 5 and the size its fitted aggregation weight from section 6.
# The shaded box is where the study's report calls a head a **counting head**
# ($0.8 \le w_{01} \le 1.25$, $w_{02} < 0.2$; with AUC ≥ 0.9 as well).

# %%
fig, (ax, ax_bos) = plt.subplots(
    1, 2, figsize=(13, 4.6), layout="constrained", gridspec_kw=dict(width_ratios=(3, 2))
)
for i, seed in enumerate(SEEDS):
    w01 = np.clip(np.log10(stats[i]["w_01"]), -4, 4)  # [H]
    w02 = np.clip(np.log10(stats[i]["w_02"]), -4, 4)  # [H]
    auc = [row["auc_alone"] for row in semantics[i]]
    alpha = np.nan_to_num(aggregations[i]["alpha_fitted"] or [0.0] * H)
    points = ax.scatter(
        w01,
        w02,
        c=auc,
        cmap="viridis",
        vmin=0.5,
        vmax=1,
        marker="os^"[i],
        s=30 + 400 * np.clip(alpha, 0, 1),
        edgecolors="black",
        label=f"seed {seed}",
    )
    for h in range(H):
        ax.annotate(
            f"s{seed}h{h}", (w01[h], w02[h]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    ax_bos.bar(np.arange(H) + (i - 1) * 0.27, stats[i]["bos_weight"], 0.27, label=f"seed {seed}")
ax.add_patch(
    plt.Rectangle(
        (np.log10(BALANCED_W01[0]), -4),
        np.log10(BALANCED_W01[1] / BALANCED_W01[0]),
        np.log10(SUPPRESSED_W02) + 4,
        color="tab:green",
        alpha=0.12,
    )
)
ax.axvline(0, color="black", lw=0.6)
ax.set(
    xlabel="log10 w_01  (0: 1s and 0s weighed alike)",
    ylabel="log10 w_02  (below 0: 2s suppressed)",
    title="every head: balance and suppression (size: fitted weight)",
)
ax.legend(fontsize=8, loc="upper left")
fig.colorbar(points, ax=ax, label="AUC of c_h alone")
ax_bos.set_xticks(range(H), [f"head {h}" for h in range(H)])
ax_bos.set(title="mean attention weight on BOS", ylim=(0, 1))
ax_bos.legend(fontsize=8)
save_figure(fig, "06_attention_stats.png")
in_box = [
    f"s{seed}h{h}"
    for i, seed in enumerate(SEEDS)
    for h in range(H)
    if BALANCED_W01[0] <= stats[i]["w_01"][h] <= BALANCED_W01[1]
    and stats[i]["w_02"][h] < SUPPRESSED_W02
]
print("heads in the green box (seed s, head h):", ", ".join(in_box) or "none")

# %% [markdown]
# What to look at: big yellow markers inside the green box are heads that count the
# textbook way, balanced and ignoring the noise, and carry weight. Heads far to the right
# attend mostly to 1s, heads far to the left mostly to 0s; such a head's output still
# varies with the count, so it can have a high AUC outside the box. A head with nearly all
# its weight on `BOS` is close to silent: its output is almost constant. (Values are
# clipped to $10^{\pm 4}$ for the plot.)
#
# ### Exercise 6b: the score table from the weights
#
# Write `relative_weights(params, config)` that returns `(w_01, w_02)`, each `[H, 3]`
# over the query tokens `0, 1, 2`, computed from the parameters alone: the embeddings
# `params["embed.W_E"] [V, d_model]`, `params["blocks.0.attn.W_Q"]` and `"...W_K"`
# `[H, d_model, d_head]`, and the formulas above. The check compares them with what
# `attention_stats` reported for each model (NumPy arrays in, to a relative 1e-3).


# %%
def relative_weights(params, config):
    """One model's parameters (NumPy) -> (w_01 [H, 3], w_02 [H, 3]) over query tokens 0, 1, 2."""
    raise NotImplementedError("exercise 6b: your code here")


def test_relative_weights(fn):
    for seed, host, stat in zip(SEEDS, hosts, stats, strict=True):
        w_01, w_02 = (np.asarray(w) for w in fn(host, config))
        for name, got in (("w_01", w_01), ("w_02", w_02)):
            expected = np.array(stat["per_query"][name])  # [H, 3]
            assert got.shape == expected.shape, f"{name}: shape {got.shape}, not {expected.shape}"
            error = np.abs(np.log(got / expected)).max()
            assert error < 1e-3, f"seed {seed}, {name}: off by a factor up to {np.exp(error):.4f}"


check_exercise("exercise 6b", relative_weights, test_relative_weights)

# %% [markdown]
# ## 8. Interventions: edit the attention, or the values, and rerun
#
# The statistics above describe; an intervention tests. `analysis.force_weight_hook`
# edits one head's scores before the softmax (hook `blocks.0.attn.hook_attn_scores`)
# so that its $w_{01}$ becomes exactly 1: for every query, the scores of the 1-keys are
# shifted by one common amount. First by hand, on the example string, with the head of
# largest fitted weight: the last query's mean weight per 1-key and per 0-key before and
# after.

# %%
alpha0 = np.nan_to_num(aggregations[0]["alpha_fitted"] or [0.0] * H)
top = int(np.argmax(alpha0))
example_d = to_device(example, DEVICE)
seen = {}


def record(name):
    def hook(activation):
        seen[name] = to_numpy(activation)
        return activation

    return hook


for edited in (False, True):
    hooks = {"blocks.0.attn.hook_pattern": record("pattern")}
    if edited:
        hooks["blocks.0.attn.hook_attn_scores"] = analysis.force_weight_hook(
            example_d, top, data.ZERO, data.ONE, 1.0
        )
    eos_logit = to_numpy(mc.forward(model, example_d, config, hooks=hooks))[0, :, data.EOS]
    last = seen["pattern"][0, top, -1]  # [T] the last query's row of head `top`
    per_one = last[example[0] == data.ONE].mean()
    per_zero = last[example[0] == data.ZERO].mean()
    print(
        f"head {top}, {'w_01 forced to 1' if edited else 'as trained':16}: per 1-key "
        f"{per_one:.4f}, per 0-key {per_zero:.4f}, ratio {per_one / per_zero:8.3f};  "
        f"EOS decisions right: {int(((eos_logit > 0) == (example_y > 0.5)).sum())} "
        f"of {len(eos_logit)}"
    )

# %% [markdown]
# `analysis.intervention_study` runs the whole list on the held-out strings and reports
# each metric and its change from the unedited model:
#
# * `force_w01=1` / `force_w02=0` on one head at a time (`w_02 = 0` removes the 2-keys);
# * `all_heads_ideal`: every head forced to $w_{01} = 1$ and $w_{02} = 0$ at once;
# * `swap_values`: two heads trade value vectors (each keeps its own pattern and $W_O$);
#   `roll_values`: head `h` takes head `h+1`'s; `mean_values`: every head gets the mean
#   value vector over heads.

# %%
interventions = [analysis.intervention_study(m, tokens_d, targets, mask, config) for m in members]
print(f"seed {SEEDS[0]}:  intervention          heads      l-acc   change   s-acc   change")
for r in interventions[0]:
    print(
        f"   {r['name']:20} {str(r['heads']):12} {r['l_acc']:.4f}  {r['delta']['l_acc']:+.4f}  "
        f"{r['s_acc']:.4f}  {r['delta']['s_acc']:+.4f}"
    )

fig, axes = plt.subplots(
    1, len(SEEDS), figsize=(13, 5), layout="constrained", sharex=True, sharey=True
)
lowest = min(-0.05, *(r["delta"]["l_acc"] for rows in interventions for r in rows))
highest = max(0.05, *(r["delta"]["l_acc"] for rows in interventions for r in rows))
names = [
    f"{r['name']} {r['heads']}" if len(r["heads"]) < H else r["name"] for r in interventions[0][1:]
]
for ax, seed, rows in zip(axes, SEEDS, interventions, strict=True):
    deltas = [r["delta"]["l_acc"] for r in rows[1:]]
    ax.barh(range(len(deltas)), deltas, color=["tab:red" if d < 0 else "tab:blue" for d in deltas])
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title=f"seed {seed}", xlabel="change in l-acc", xlim=(1.1 * lowest, 1.1 * highest))
axes[0].set_yticks(range(len(names)), names, fontsize=8)
axes[0].invert_yaxis()
fig.suptitle("the change in l-acc under each intervention (the heads it edits in brackets)")
save_figure(fig, "06_interventions.png")

# %% [markdown]
# How to read it:
#
# * **Forcing $w_{01} = 1$** makes a head a balanced counter. If that *hurts*, the model
#   relied on the head's actual balance: a head watching the 1s, whose output the
#   unembedding reads as "share of 1s", or even a near-counter at $w_{01} = 0.9$ whose
#   threshold (the offset, the `BOS` value) was tuned to that 0.9. If it hardly matters,
#   the head was balanced already, or the read-out ignores it. `all_heads_ideal` asks
#   whether the textbook
#   pattern in every head would do as well: usually not, because $W_V$, $W_O$ and $W_U$
#   were trained for the patterns the heads actually have.
# * **Forcing $w_{02} = 0$** removes the noise symbols. A head that already suppressed the
#   2s shows no change.
# * **Swapping values** tests whether heads are interchangeable. In a pure ensemble of
#   copies every swap would change nothing. A large drop for a pair means the two heads
#   carry different information in their values, each paired with its own $W_O$:
#   specialised heads, a division of labour. `mean_values` is the gentler version of the
#   same question.
#
# ## 9. So: compete or cooperate?
#
# The numbers above, gathered per seed. The thresholds are those of the study's report
# (`minicount.study.rows`, described in `docs/method.md`): a head is **semantic** if its
# contribution alone separates the classes in either direction, max(AUC, 1 − AUC) ≥ 0.9
# (a head with AUC near 0 counts just as well, with the opposite sign), and a **counting
# head** if it is also balanced and suppresses the 2s.

# %%
print(
    "seed  l-acc  semantic  counting  top alpha  eff. heads  uniform/fitted/trained l-acc  "
    f"best alone  best x{H}  mean values"
)
summaries = []
for i, seed in enumerate(SEEDS):
    agg, sem, stat = aggregations[i], semantics[i], stats[i]
    auc = [max(r["auc_alone"], 1 - r["auc_alone"]) for r in sem]  # either direction
    semantic = sum(a >= SEMANTIC_AUC for a in auc)
    counting = sum(
        a >= SEMANTIC_AUC and BALANCED_W01[0] <= w01 <= BALANCED_W01[1] and w02 < SUPPRESSED_W02
        for a, w01, w02 in zip(auc, stat["w_01"], stat["w_02"], strict=True)
    )
    alpha = np.nan_to_num(agg["alpha_fitted"] or [0.0] * H)
    row = dict(
        seed=seed,
        l_acc=agg["trained"]["l_acc"],
        semantic=semantic,
        counting=counting,
        top_alpha=alpha.max(),
        top_head=int(alpha.argmax()),
        n_eff=agg["n_eff_fitted"],
        uniform=agg["uniform"]["l_acc"],
        fitted=agg["fitted"]["l_acc"],
        best_solo=max(r["solo"]["l_acc"] for r in sem),
        best_scaled=max(r["scaled"]["l_acc"] for r in sem),
        mean_values=next(
            r["delta"]["l_acc"] for r in interventions[i] if r["name"] == "mean_values"
        ),
    )
    summaries.append(row)
    print(
        f"{seed:4}  {row['l_acc']:.3f}  {semantic:8}  {counting:8}  {row['top_alpha']:9.2f}  "
        f"{row['n_eff']:10.2f}  {row['uniform']:.3f} / {row['fitted']:.3f} / "
        f"{row['l_acc']:.3f}   {row['best_solo']:10.3f}  {row['best_scaled']:7.3f}  "
        f"{row['mean_values']:+11.3f}"
    )
print()
for row in summaries:
    print(
        f"seed {row['seed']}: {row['semantic']} of {H} heads separate the classes alone; "
        f"head {row['top_head']} has {row['top_alpha']:.0%} of the fitted weight; the best "
        f"single head, scaled x{H}, reaches l-acc {row['best_scaled']:.3f}; a uniform vote "
        f"loses {100 * (row['fitted'] - row['uniform']):.1f} points of l-acc against the "
        f"fitted weights."
    )

# %% [markdown]
# How to turn these numbers into an answer, seed by seed:
#
# * **Pure ensemble (cooperate by voting)**: several semantic heads, several counting
#   heads, fitted weights near $1/n_{\text{heads}}$ (effective heads near
#   $n_{\text{heads}}$), uniform ≈ fitted, and the best scaled head close to the model.
#   The paper's summary describes a *pseudo-ensemble*: every head alone separates the
#   classes (semantics), but the output layer must weigh them non-uniformly for the
#   decision to land in the right place (syntax). It also reports that the attention
#   patterns ($w_{01}$, $w_{02}$) matter and the value vectors little: compare that with
#   your intervention rows.
# * **One head wins (compete)**: one semantic counting head with most of the fitted
#   weight (effective heads near 1), the others low in AUC; uniform voting far below
#   fitted, because the vote drowns the one good head in the others; leave-that-head-out
#   destroys the model, while the rest can be ablated at little cost.
# * **Division of labour**: no head alone is semantic, or several are but with very
#   different patterns (say one watching 1s and one watching 0s); only subsets of heads
#   count; swapping values between them hurts.
#
# Real models mix these, and the mix changes from seed to seed: that is the lesson of
# running three seeds rather than one. In this project's runs of the default setting,
# one or two heads usually end up as balanced counters that take most of the fitted
# weight, while uniform voting costs several points of l-acc; but look at your own
# numbers above rather than take that on trust. With `MINICOUNT_QUICK=1` the models barely
# trained, and none of this means anything yet.
#
# The full study trains more seeds, sweeps the number of heads (2, 4, 8) and varies the
# knobs that tip the balance (string length, weight decay, training length; `python -m
# minicount sweep --set KNOB=...` varies any other, such as BOS or the widths), then writes
# a report with intervals over seeds and the rule behind each verdict:
#
#     python -m minicount reproduce            # a few minutes on a laptop
#     python -m minicount reproduce --preset full --device gpu
#
# **What to take away.** In a one-layer attention-only model the `EOS` logit is exactly a
# sum of one term per head plus an offset, so every question about the heads becomes a
# question about these terms: does each separate the classes (AUC), where does it put the
# threshold (solo and scaled accuracy), how are they weighed (aggregation), what do the
# heads attend to ($w_{01}$, $w_{02}$, `BOS`), and what changes when that is edited
# (ablation, interventions). All of it is hooks on one forward pass.
#
# ## Solutions
#
# The reference solutions, run through the same checks.


# %%
def uniform_l_acc_solution(c, offset, targets, mask):
    """c [H, N, T], offset [N, T], targets [N, T, V], mask [N, T] -> l-acc of the uniform vote."""
    sigma = np.array([c_h[mask].std() for c_h in c])  # [H] over the real positions
    votes = (c / sigma[:, None, None]).sum(axis=0)  # [N, T] the sum of the z_h
    y = targets[..., data.EOS] > 0.5  # [N, T]
    fit = analysis.fit_logistic(votes[mask][:, None], y[mask], offset=offset[mask])
    score = offset + fit["b"] + float(fit["w"][0]) * votes  # [N, T]
    return float(((score > 0) == y)[mask].mean())


def relative_weights_solution(params, config):
    """One model's parameters (NumPy) -> (w_01 [H, 3], w_02 [H, 3]) over query tokens 0, 1, 2."""
    W_E = params["embed.W_E"].astype(np.float64)  # [V, d_model]
    q = W_E @ params["blocks.0.attn.W_Q"]  # [V, d_model] @ [H, d_model, d_head] -> [H, V, d_head]
    k = W_E @ params["blocks.0.attn.W_K"]  # [H, V, d_head]
    S = q @ k.transpose(0, 2, 1) / np.sqrt(config.d_head)  # [H, V, V] query token x key token
    queries = [data.ZERO, data.ONE, data.TWO]
    w_01 = np.exp(S[:, queries, data.ONE] - S[:, queries, data.ZERO])  # [H, 3]
    w_02 = np.exp(S[:, queries, data.TWO] - S[:, queries, data.ZERO])  # [H, 3]
    return w_01, w_02


assert check_exercise("exercise 6a, solution", uniform_l_acc_solution, test_uniform_l_acc)
assert check_exercise("exercise 6b, solution", relative_weights_solution, test_relative_weights)
