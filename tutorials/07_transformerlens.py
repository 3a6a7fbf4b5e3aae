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
# # Tutorial 7 · A trained minicount model in TransformerLens
#
# minicount borrows TransformerLens's vocabulary on purpose: the weights are called
# `embed.W_E` and `blocks.0.attn.W_Q` [n_heads, d_model, d_head], the activations
# `hook_pattern`, `hook_z`, `hook_result`. That makes the step across a copy.
# `minicount.interop.to_hooked_transformer(params, config)` returns a
# `transformer_lens.HookedTransformer` that computes exactly what minicount's forward pass
# computes, so every tool a researcher already knows (`run_with_cache`, `run_with_hooks`,
# `ActivationCache.stack_head_results`, `logit_attrs`, ...) works on a model trained
# here; `from_hooked_transformer(model)` brings one back.
#
# In this tutorial we
#
# 1. train a small counter with minicount and split its `EOS` logit by head with
#    `minicount.analysis.eos_contributions` (tutorial 6, section 2),
# 2. move it into TransformerLens and check that the logits and the activations agree,
# 3. redo the per-head `EOS` attribution with TransformerLens's own tools and check that it
#    gives the same numbers,
# 4. ablate a head on both sides with a hook, and bring the model back.
#
# It needs the optional extra: `pip install -e ".[lens]"` (TransformerLens 3.x, whose
# `HookedTransformer` TransformerLens 4 replaced by `TransformerBridge`; see
# docs/transformerlens.md). Without it, the tutorial does section 1, says so, and stops.

# %%
import logging
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

import minicount as mc
from minicount import analysis, data
from minicount.analysis.hooks import run_with_cache
from minicount.notebook import save_figure

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, in a notebook
try:
    import torch
    import transformer_lens  # noqa: F401

    from minicount import interop

    HAVE_LENS = True
except ImportError as missing:
    HAVE_LENS = False
    WHY = str(missing)


QUICK = os.environ.get("MINICOUNT_QUICK", "") not in ("", "0")

SETTINGS = dict(batch_size=32, max_len=8) if QUICK else dict(batch_size=128, max_len=16)
STEPS = 30 if QUICK else 400
N_EVAL = 64 if QUICK else 512
EXAMPLE = "1020120121102211"[: SETTINGS["max_len"]]  # the string drawn in the figure
print(f"{'quick' if QUICK else 'full'} mode: {STEPS} steps, {SETTINGS}, {N_EVAL} strings")


# %% [markdown]
# ## 1. A counter, and its EOS logit split by head
#
# The study's model: one attention-only layer, four heads, no positional embedding (NoPE),
# no LayerNorm. For such a model the `EOS` logit is exactly a sum of one term per head plus
# an offset (the embedding's own path and the bias), `logit = Σ_h c_h + offset`.

# %%
config = mc.ModelConfig()
params, _ = mc.train(config, steps=STEPS, seed=0, **SETTINGS)
tokens, targets, mask = data.eval_set(data.DataConfig(max_len=SETTINGS["max_len"], n_eval=N_EVAL))
c_mc, offset_mc = analysis.eos_contributions(params, tokens, config)  # [H, N, T], [N, T]
print("minicount: c", c_mc.shape, "offset", offset_mc.shape)

example = data.encode(EXAMPLE)[None]  # [1, T]
example_labels = ["BOS"] + list(EXAMPLE)
c_ex_mc = analysis.eos_contributions(params, example, config)[0][:, 0]  # [H, T]


def plot_heads(c_mc, c_tl=None):
    """Bars: minicount's per-head EOS terms on EXAMPLE; crosses: TransformerLens's."""
    H, T = c_mc.shape
    fig, ax = plt.subplots(figsize=(11, 3.6), layout="constrained")
    x = np.arange(T)
    width = 0.8 / H
    for h in range(H):
        ax.bar(x + (h - (H - 1) / 2) * width, c_mc[h], width, color=f"C{h}", label=f"head {h}")
        if c_tl is not None:
            ax.plot(x + (h - (H - 1) / 2) * width, c_tl[h], "kx", ms=5)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, example_labels)
    source = "minicount (bars) and TransformerLens (x)" if c_tl is not None else "minicount"
    ax.set(
        xlabel="token just read", ylabel="contribution to the EOS logit",
        title=f"each head's term in the EOS logit: {source}",
    )  # fmt: skip
    ax.legend(ncol=H, fontsize=8)
    return fig


# %% [markdown]
# Without TransformerLens installed the tutorial ends here, with minicount's side drawn.

# %%
if not HAVE_LENS:
    print(f"TransformerLens is not installed ({WHY}): pip install -e '.[lens]' to run the rest")
    fig = plot_heads(c_ex_mc)
    save_figure(fig, "07_eos_by_head.png")
    raise SystemExit(0)

# %% [markdown]
# ## 2. The same model as a HookedTransformer
#
# `to_hooked_transformer` builds the TransformerLens config (attention-only, no
# normalisation, zero attention biases, the same 6-token vocabulary and 1/sqrt(d_head)
# scale, `use_attn_result=True` so that each head's output is recorded) and copies the
# weights. TransformerLens has no positional embedding that adds nothing, so a NoPE model
# gets `"standard"` positions whose `W_pos` is zero and frozen.

# %%
model = interop.to_hooked_transformer(params, config)
print(model.cfg.n_layers, "layer,", model.cfg.n_heads, "heads, attn_only", model.cfg.attn_only)
tokens_t = torch.from_numpy(tokens)  # minicount's token ids are TransformerLens's too
logits_tl, cache = model.run_with_cache(tokens_t)
logits_mc = mc.forward(params, tokens, config)
print("largest logit difference:", float(np.abs(logits_tl.detach().numpy() - logits_mc).max()))
assert np.allclose(logits_tl.detach().numpy(), logits_mc, atol=1e-4)

# %% [markdown]
# The activations share their names, but not always their layout: TransformerLens puts
# the head axis after the position for q, k, v, z and the per-head result, and its
# `hook_attn_scores` holds the *masked* scores (−inf where a key comes after the query).
# `interop.activation_as_minicount` moves the head axis; the scores compare on and below
# the diagonal.

# %%
names = interop.shared_hook_names(config)
_, ours = run_with_cache(params, tokens, config, names)
T = tokens.shape[1]
causal = np.tril(np.ones((T, T), bool))
for name in names:
    a, b = interop.activation_as_minicount(name, cache[name]), ours[name]
    if name.endswith("hook_attn_scores"):
        a, b = a[..., causal], b[..., causal]
    print(f"  {name:<32} {str(tuple(cache[name].shape)):<22} max |diff| {np.abs(a - b).max():.1e}")
    assert np.allclose(a, b, atol=1e-4), name

# %% [markdown]
# ## 3. Direct logit attribution, the TransformerLens way
#
# `cache.stack_head_results(layer=-1)` stacks every head's output [heads, N, T, d_model];
# `cache.logit_attrs(stack, tokens=EOS)` applies the final LayerNorm (none here, so
# nothing) and projects onto the `EOS` column of `W_U`. That is `c_h` for every head and
# position. The rest of the logit is the embedding's path, `cache.decompose_resid` item
# `embed` (plus `pos_embed`, zero here), projected the same way, plus `b_U[EOS]`.

# %%
# (stack_head_results logs "Tried to compute head results when they were already cached":
# use_attn_result=True has recorded them already, which is what we want)
logging.getLogger().setLevel(logging.ERROR)
EOS = data.EOS
stack, labels = cache.stack_head_results(layer=-1, return_labels=True)  # [H, N, T, d_model]
c_tl = cache.logit_attrs(stack, tokens=EOS).detach().numpy()  # [H, N, T]
parts, part_labels = cache.decompose_resid(layer=-1, return_labels=True, mode="attn")
direct = parts[[i for i, n in enumerate(part_labels) if n in ("embed", "pos_embed")]]
offset_tl = (cache.logit_attrs(direct, tokens=EOS).sum(0) + model.b_U[EOS]).detach().numpy()
print("heads:", labels, " rest:", part_labels)
print("largest difference in c_h:   ", float(np.abs(c_tl - c_mc).max()))
print("largest difference in offset:", float(np.abs(offset_tl - offset_mc).max()))
assert np.allclose(c_tl, c_mc, atol=1e-4) and np.allclose(offset_tl, offset_mc, atol=1e-4)
assert np.allclose(c_tl.sum(0) + offset_tl, logits_mc[..., EOS], atol=1e-4)  # it adds up

_, example_cache = model.run_with_cache(torch.from_numpy(example))
example_stack = example_cache.stack_head_results(layer=-1)
c_ex_tl = example_cache.logit_attrs(example_stack, tokens=EOS).detach().numpy()[:, 0]  # [H, T]
fig = plot_heads(c_ex_mc, c_ex_tl)
save_figure(fig, "07_eos_by_head.png")

# %% [markdown]
# The crosses sit on the bars: the two projects split the logit the same way. From here
# on, anything TransformerLens offers (activation patching, path patching, its head
# detectors) applies to a minicount model.
#
# ## 4. Hooks on both sides, and the way back
#
# Zero-ablating head 0 is a hook on `hook_z` in both projects (the head axis sits in a
# different place, so the index differs). The l-acc of the ablated model agrees.

# %%


def zero_head_tl(z, hook):  # TransformerLens: z [N, T, H, d_head]
    z = z.clone()
    z[:, :, 0] = 0.0
    return z


def zero_head_mc(z):  # minicount: z [N, H, T, d_head]
    z = z.copy()
    z[:, 0] = 0.0
    return z


ablated_tl = model.run_with_hooks(tokens_t, fwd_hooks=[("blocks.0.attn.hook_z", zero_head_tl)])
ablated_mc = mc.forward(params, tokens, config, hooks={"blocks.0.attn.hook_z": zero_head_mc})
y = targets[..., EOS] > 0.5


def l_acc(logits):
    return float(((logits[..., EOS] > 0) == y)[mask].mean())


ablated_tl = ablated_tl.detach().numpy()
print(
    f"l-acc: trained {l_acc(logits_mc):.3f}; head 0 zeroed: minicount "
    f"{l_acc(ablated_mc):.3f}, TransformerLens {l_acc(ablated_tl):.3f}"
)
assert np.allclose(ablated_tl, ablated_mc, atol=1e-4)

back, back_config = interop.from_hooked_transformer(model)
assert back_config == config and all(np.array_equal(back[k], params[k]) for k in params)
print("round trip: the same config and the same parameters, bit for bit")
