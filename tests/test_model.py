"""Properties of the forward pass that hold for any weights."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicount as mc
from minicount import data
from minicount.data import V

from .helpers import TINY

configs = st.builds(
    mc.ModelConfig,
    d_model=st.integers(2, 8),
    n_heads=st.integers(1, 3),
    d_head=st.integers(1, 4),
    n_layers=st.integers(1, 2),
    n_ctx=st.just(12),
    pos_emb=st.booleans(),
    layernorm=st.booleans(),
    mlp=st.booleans(),
    d_mlp=st.integers(1, 6),
)


@given(config=configs, seed=st.integers(0, 1000), t=st.integers(0, 10))
def test_causality(config, seed, t):
    """Changing tokens after position t leaves the logits at positions <= t unchanged."""
    params = mc.init_params(config, seed, dtype=np.float64)
    r = np.random.default_rng(seed)
    tokens = r.integers(0, 6, size=(3, 11))
    changed = tokens.copy()
    changed[:, t + 1 :] = r.integers(0, 6, size=changed[:, t + 1 :].shape)
    a, b = mc.forward(params, tokens, config), mc.forward(params, changed, config)
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=1e-12, atol=1e-12)


@given(config=configs, seed=st.integers(0, 1000))
def test_nope_is_permutation_invariant_before_t(config, seed):
    """One layer without positional embedding: shuffling the tokens before t leaves position t
    unchanged. (With two layers it need not: layer 1's output at an earlier key depends on
    that key's own prefix, which the shuffle changes.)"""
    config = mc.ModelConfig(**{**config.to_dict(), "pos_emb": False, "n_layers": 1})
    params = mc.init_params(config, seed, dtype=np.float64)
    r = np.random.default_rng(seed)
    tokens = r.integers(0, 6, size=(2, 9))
    shuffled = tokens.copy()
    shuffled[:, :8] = tokens[:, r.permutation(8)]
    a, b = mc.forward(params, tokens, config), mc.forward(params, shuffled, config)
    np.testing.assert_allclose(a[:, 8], b[:, 8], rtol=1e-10, atol=1e-12)


def test_positional_embedding_breaks_permutation_invariance():
    config = mc.ModelConfig(d_model=8, pos_emb=True, n_ctx=12)
    params = mc.init_params(config, 0, dtype=np.float64)
    tokens = np.array([[0, 1, 1, 2, 4]])
    shuffled = np.array([[1, 2, 0, 1, 4]])
    assert not np.allclose(
        mc.forward(params, tokens, config)[:, -1], mc.forward(params, shuffled, config)[:, -1]
    )


@given(config=configs, seed=st.integers(0, 1000))
def test_attention_rows_sum_to_one_and_are_causal(config, seed):
    params = mc.init_params(config, seed, dtype=np.float64)
    tokens = np.random.default_rng(seed).integers(0, 6, size=(2, 7))
    seen = []
    mc.forward(
        params, tokens, config, hooks={"blocks.0.attn.hook_pattern": lambda a: seen.append(a) or a}
    )
    (pattern,) = seen
    assert pattern.shape == (2, config.n_heads, 7, 7)
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-12)
    assert (np.triu(np.ones((7, 7)), 1) * pattern == 0).all()


@given(seed=st.integers(0, 1000), H=st.integers(1, 4))
def test_head_decomposition_adds_up(seed, H):
    """One layer, attention only: logits = x0 W_U + b_U + Σ_h z_h W_O[h] W_U (docs/method.md §4)."""
    config = mc.ModelConfig(d_model=8, n_heads=H, d_head=4)
    params = mc.init_params(config, seed, dtype=np.float64)
    tokens, _, _ = data.sample_batch(5, 10, np.random.default_rng(seed))
    saved = {}
    logits = mc.forward(
        params,
        tokens,
        config,
        hooks={
            "hook_embed": lambda x: saved.setdefault("x0", x),
            "blocks.0.attn.hook_z": lambda z: saved.setdefault("z", z),
        },
    )
    W_U, b_U, W_O = params["unembed.W_U"], params["unembed.b_U"], params["blocks.0.attn.W_O"]
    direct = saved["x0"] @ W_U + b_U  # [B, T, V]
    heads = np.einsum("bhte,hed,dv->hbtv", saved["z"], W_O, W_U)  # [H, B, T, V]
    np.testing.assert_allclose(direct + heads.sum(0), logits, rtol=1e-10, atol=1e-10)


def test_hook_result_matches_fused_path_and_zero_ablation():
    config = mc.ModelConfig()
    params = mc.init_params(config, 3, dtype=np.float64)
    tokens, _, _ = data.sample_batch(4, 12, np.random.default_rng(0))
    plain = mc.forward(params, tokens, config)
    same = mc.forward(params, tokens, config, hooks={"blocks.0.attn.hook_result": lambda r: r})
    np.testing.assert_allclose(plain, same, rtol=1e-12, atol=1e-12)

    def zero_all(r):
        return r * 0.0

    ablated = mc.forward(params, tokens, config, hooks={"blocks.0.attn.hook_result": zero_all})
    x0 = params["embed.W_E"][tokens]
    np.testing.assert_allclose(
        ablated, x0 @ params["unembed.W_U"] + params["unembed.b_U"], atol=1e-12
    )
    assert not np.allclose(ablated, plain)


def test_init_is_seeded_and_dtype_independent():
    config = mc.ModelConfig(layernorm=True, mlp=True)
    a, b = mc.init_params(config, 1), mc.init_params(config, 1)
    c = mc.init_params(config, 2)
    d = mc.init_params(config, 1, dtype=np.float64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_allclose(a[k], d[k], rtol=1e-6)
    assert not np.array_equal(a["embed.W_E"], c["embed.W_E"])
    assert a["embed.W_E"].dtype == np.float32 and d["embed.W_E"].dtype == np.float64


def test_ensemble_init_stacks_members():
    config = mc.ModelConfig()
    ens = mc.init_ensemble(config, [4, 9])
    for i, s in enumerate([4, 9]):
        single = mc.init_params(config, s)
        for k in single:
            np.testing.assert_array_equal(ens[k][i], single[k])


@given(seeds=st.lists(st.integers(0, 99), min_size=1, max_size=4), pos_emb=st.booleans())
def test_member_members_and_stack_round_trip(seeds, pos_emb):
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4, pos_emb=pos_emb, n_ctx=6)
    singles = [mc.init_params(config, s) for s in seeds]
    ens = mc.stack(singles)
    assert mc.n_members(ens) == len(seeds) and mc.n_members(singles[0]) is None
    for k in singles[0]:
        assert ens[k].shape == (len(seeds),) + singles[0][k].shape
    for i, single in enumerate(singles):
        for got in (mc.member(ens, i), mc.members(ens)[i]):
            assert got.keys() == single.keys()
            for k in single:
                np.testing.assert_array_equal(got[k], single[k])
    assert len(mc.members(ens)) == len(seeds)
    again = mc.stack(mc.members(ens))
    for k in ens:
        np.testing.assert_array_equal(again[k], ens[k])
    assert mc.members(singles[0]) == [singles[0]]  # a single model is a list of one


def test_stack_refuses_models_that_do_not_match():
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    a = mc.init_params(config, 0)
    wider = mc.init_params(mc.ModelConfig(d_model=8, n_heads=3, d_head=4), 1)
    with pytest.raises(ValueError, match=r"blocks.0.attn.W_Q is \(3, 8, 4\) in model 1"):
        mc.stack([a, wider])
    with pytest.raises(ValueError, match=r"parameter names \['extra'\]"):
        mc.stack([a, a | {"extra": np.zeros(3)}])
    missing = {k: v for k, v in a.items() if k != "unembed.b_U"}
    with pytest.raises(ValueError, match=r"parameter names \['unembed.b_U'\]"):
        mc.stack([a, missing])
    with pytest.raises(ValueError, match="at least one model"):
        mc.stack([])


def test_member_refuses_a_single_model_and_a_missing_member():
    config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4)
    ens = mc.init_ensemble(config, [0, 1])
    with pytest.raises(ValueError, match="single model"):
        mc.member(mc.init_params(config, 0), 0)
    with pytest.raises(ValueError, match="member 2: the ensemble holds 2"):
        mc.member(ens, 2)
    np.testing.assert_array_equal(mc.member(ens, -1)["embed.W_E"], ens["embed.W_E"][1])


@pytest.mark.parametrize(
    "bad", [dict(d_model=0), dict(n_heads=-1), dict(d_head=2.5), dict(mlp="yes")]
)
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        mc.ModelConfig(**bad)


def test_forward_rejects_bad_tokens():
    config = mc.ModelConfig(pos_emb=True, n_ctx=5)
    params = mc.init_params(config)
    with pytest.raises(ValueError, match="0..5"):
        mc.forward(params, np.array([[0, 7]]), config)
    with pytest.raises(ValueError, match="n_ctx"):
        mc.forward(params, np.zeros((1, 6), dtype=int), config)
    with pytest.raises(ValueError, match="integer"):
        mc.forward(params, np.zeros((1, 3)), config)


def test_names_are_built_as_transformer_lens_builds_them():
    from minicount.names import act_name, param_name

    assert act_name("pattern", layer=0) == "blocks.0.attn.hook_pattern"
    assert act_name("attn_scores", 2) == "blocks.2.attn.hook_attn_scores"
    assert act_name("resid_post", 1) == "blocks.1.hook_resid_post"
    assert act_name("embed") == "hook_embed" and act_name("pos_embed") == "hook_pos_embed"
    assert act_name("blocks.0.attn.hook_z") == "blocks.0.attn.hook_z"  # already full
    assert (
        param_name("W_Q", 0) == "blocks.0.attn.W_Q"
        and param_name("b_out", 1) == "blocks.1.mlp.b_out"
    )
    assert param_name("ln1.w", 0) == "blocks.0.ln1.w" and param_name("W_E") == "embed.W_E"
    config = mc.ModelConfig(n_layers=2, pos_emb=True, layernorm=True, mlp=True)
    assert set(mc.init_params(config)) == set(mc.param_shapes(config))
    assert "hook_pos_embed" in mc.model.hook_names(config)
    assert "hook_pos_embed" not in mc.model.hook_names(mc.ModelConfig())


def test_hook_embed_and_hook_pos_embed_are_apart():
    """hook_embed: the token embedding alone; hook_pos_embed: W_pos[t] at every position;
    block 0's resid_pre is their sum (as in TransformerLens)."""
    config = mc.ModelConfig(pos_emb=True, n_ctx=12)
    params = mc.init_params(config, 2, dtype=np.float64)
    tokens, _, _ = data.sample_batch(4, 8, np.random.default_rng(2))
    saved = {}
    hooks = {n: (lambda a, n=n: saved.setdefault(n, a))
             for n in ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre")}  # fmt: skip
    mc.forward(params, tokens, config, hooks=hooks)
    T = tokens.shape[-1]
    np.testing.assert_array_equal(saved["hook_embed"], params["embed.W_E"][tokens])
    assert saved["hook_pos_embed"].shape == saved["hook_embed"].shape
    np.testing.assert_array_equal(saved["hook_pos_embed"][1], params["pos_embed.W_pos"][:T])
    np.testing.assert_array_equal(
        saved["blocks.0.hook_resid_pre"], saved["hook_embed"] + saved["hook_pos_embed"]
    )


# ---------------------------------------- junk in: logits or a ValueError that names it


token_arrays = st.builds(
    lambda a, dtype: a.astype(dtype),  # uint8 wraps -1 to 255: out of range all the same
    hnp.arrays(
        np.int64,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements=st.integers(-2, 8),
    ),
    st.sampled_from(["int32", "int64", "uint8", "float64", "bool"]),
)


@settings(max_examples=40)
@given(tokens=token_arrays)
def test_forward_junk_tokens_give_logits_or_a_value_error(tokens):
    params = mc.init_params(TINY, 0)
    valid = (
        tokens.ndim >= 2
        and tokens.size > 0
        and tokens.dtype.kind in "iu"
        and tokens.min() >= 0
        and tokens.max() < V
    )
    if not valid:
        with pytest.raises(ValueError):
            mc.forward(params, tokens, TINY)
        return
    logits = mc.forward(params, tokens, TINY)
    assert logits.shape == tokens.shape + (V,) and np.isfinite(logits).all()
    # the same ids as int64 give the same logits: the dtype of valid ids does not matter
    np.testing.assert_array_equal(logits, mc.forward(params, tokens.astype(np.int64), TINY))


@pytest.mark.parametrize(
    "which,breakage",
    [
        ("targets", lambda t: t[..., :3]),
        ("targets", lambda t: t[:2]),
        ("targets", lambda t: t.astype(np.int64)),
        ("targets", lambda t: np.where(t > 0, np.nan, t)),
        ("targets", lambda t: t * 2 - 0.5),
        ("targets", lambda t: t[None].repeat(3, 0)),
        ("targets", lambda t: t.tolist()),
        ("mask", lambda m: m.astype(np.float32)),
        ("mask", lambda m: m[:, :2]),
        ("mask", lambda m: np.zeros_like(m)),
        ("mask", lambda m: m[None].repeat(2, 0)),
        ("mask", lambda m: m.tolist()),
    ],
)
def test_loss_with_bad_targets_or_mask_is_a_value_error(which, breakage):
    params = mc.init_params(TINY, 0)
    tokens, targets, mask = data.sample_batch(4, 5, np.random.default_rng(0))
    args = {"targets": targets, "mask": mask}
    args[which] = breakage(args[which])
    with pytest.raises(ValueError, match=which):
        mc.loss_and_grads(params, tokens, args["targets"], args["mask"], TINY)


@pytest.mark.parametrize(
    "breakage,match",
    [
        (lambda p: p.pop("unembed.b_U"), "missing"),
        (lambda p: p.update(extra=np.zeros(3)), "unexpected"),
        (lambda p: p.update({"embed.W_E": np.zeros((6, 9), np.float32)}), "embed.W_E"),
        (lambda p: p.update({"embed.W_E": np.zeros((6, 8), np.int64)}), "floating"),
        (
            lambda p: p.update({"embed.W_E": np.zeros((2, 6, 8), np.float32)}),
            "disagree on the model",
        ),
        (lambda p: p.update({"embed.W_E": [[0.0] * 8] * 6}), "array"),
    ],
)
def test_params_that_do_not_fit_the_config_are_named(breakage, match):
    params = mc.init_params(TINY, 0)
    breakage(params)
    tokens = data.encode("0121")[None]
    with pytest.raises(ValueError, match=match):
        mc.forward(params, tokens, TINY)


def test_token_and_context_limits_are_named():
    params = mc.init_params(TINY, 0)
    with pytest.raises(ValueError, match=r"0\.\.5, got 0\.\.6"):
        mc.forward(params, np.array([[3, 0, 6]]), TINY)
    with pytest.raises(ValueError, match="n_ctx=4"):
        config = mc.ModelConfig(d_model=8, n_heads=2, d_head=4, pos_emb=True, n_ctx=4)
        mc.forward(mc.init_params(config, 0), data.encode("0121")[None], config)
    with pytest.raises(ValueError, match="unknown hook names.*hook_patern"):
        mc.forward(
            params, data.encode("01")[None], TINY, hooks={"blocks.0.attn.hook_patern": lambda a: a}
        )
    ens = mc.init_ensemble(TINY, [0, 1])
    with pytest.raises(ValueError, match="ensemble of 2"):
        mc.forward(ens, np.zeros((3, 2, 4), np.int64), TINY)
