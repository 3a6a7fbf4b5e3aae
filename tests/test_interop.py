"""minicount.interop: a minicount model as a TransformerLens HookedTransformer, and back.

Skipped when the extra is not installed (pip install -e ".[lens]"). Every architecture that
both projects support is compared: logits, and every activation under the shared hook
names, for 1 and 2 layers, with and without learned positions, LayerNorm and the MLP.
"""

import warnings

import numpy as np
import pytest

import minicount as mc
from minicount.analysis import eos_contributions
from minicount.analysis.hooks import run_with_cache
from minicount.data import EOS

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

from minicount import interop  # noqa: E402

ARCHITECTURES = {
    "1L-nope": {},
    "1L-pos": dict(pos_emb=True),
    "1L-ln": dict(layernorm=True),
    "1L-mlp": dict(mlp=True),
    "2L-nope": dict(n_layers=2),
    "2L-pos-ln": dict(n_layers=2, pos_emb=True, layernorm=True),
    "2L-pos-ln-mlp": dict(n_layers=2, pos_emb=True, layernorm=True, mlp=True),
}


def random_model(config, seed=1):
    """Initial weights, with the LayerNorm gains and all biases made non-trivial."""
    rng = np.random.default_rng(seed)
    params = mc.init_params(config, seed)
    for name, value in params.items():
        if name.endswith((".w", ".b", "b_in", "b_out", "b_U")):
            params[name] = (value + 0.3 * rng.standard_normal(value.shape)).astype(np.float32)
    return params


@pytest.fixture(scope="module")
def tokens():
    tokens, _, _ = mc.data.sample_batch(16, 20, np.random.default_rng(0))
    return tokens


@pytest.mark.parametrize("kw", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_logits_and_every_shared_activation_agree(kw, tokens):
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=5, d_mlp=24, **kw)
    params = random_model(config)
    model = interop.to_hooked_transformer(params, config)
    names = interop.shared_hook_names(config)
    logits, ours = run_with_cache(params, tokens, config, names)
    theirs_logits, theirs = model.run_with_cache(torch.from_numpy(tokens))
    np.testing.assert_allclose(theirs_logits.detach().numpy(), logits, rtol=1e-5, atol=1e-5)
    T = tokens.shape[1]
    causal = np.tril(np.ones((T, T), bool))
    assert len(names) == 9 * config.n_layers + 1 + int(config.pos_emb)
    for name in names:
        a, b = interop.activation_as_minicount(name, theirs[name]), ours[name]
        assert a.shape == b.shape, name
        if name.endswith("hook_attn_scores"):
            # TransformerLens records masked scores: -inf after the query, where minicount
            # keeps q·k; only the causal part means the same
            assert np.isneginf(a[..., ~causal]).all()
            a, b = a[..., causal], b[..., causal]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kw", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_round_trip_gives_the_same_params_and_config(kw):
    config = mc.ModelConfig(d_model=16, n_heads=3, d_head=5, d_mlp=24, **kw)
    params = random_model(config, seed=2)
    back, back_config = interop.from_hooked_transformer(
        interop.to_hooked_transformer(params, config)
    )
    assert back_config == config
    assert back.keys() == params.keys()
    for name in params:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], params[name], err_msg=name)


def test_nope_gets_frozen_zero_positions():
    config = mc.ModelConfig()
    model = interop.to_hooked_transformer(mc.init_params(config), config)
    assert model.cfg.positional_embedding_type == "standard"
    assert not model.pos_embed.W_pos.any() and not model.pos_embed.W_pos.requires_grad
    assert model.cfg.use_attn_result and model.cfg.normalization_type is None
    assert model.cfg.attn_only and model.cfg.d_vocab == model.cfg.d_vocab_out == 6


def test_ensemble_is_refused_with_the_way_out():
    config = mc.ModelConfig()
    with pytest.raises(ValueError, match=r"ensemble.*member i"):
        interop.to_hooked_transformer(mc.init_ensemble(config, [0, 1]), config)


def hooked(**overrides):
    """A small HookedTransformer that minicount can run, with some settings changed."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = dict(
        n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=10, d_vocab=6, attn_only=True,
        normalization_type=None, act_fn=None, device="cpu", seed=0,
    )  # fmt: skip
    cfg.update(overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        return HookedTransformer(HookedTransformerConfig(**cfg))


def test_a_model_made_in_transformer_lens_comes_in(tokens):
    model = hooked(normalization_type="LN", n_layers=2)
    with torch.no_grad():
        for l in range(2):
            for b in interop.ATTN_BIASES:
                getattr(model.blocks[l].attn, b).zero_()
    params, config = interop.from_hooked_transformer(model)
    assert config.pos_emb and config.layernorm and not config.mlp and config.n_ctx == 10
    np.testing.assert_allclose(
        mc.forward(params, tokens[:, :10], config),
        model(torch.from_numpy(tokens[:, :10])).detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "overrides,words",
    [
        (dict(d_vocab=50), ["d_vocab=50"]),
        (dict(normalization_type="RMS"), ["normalization_type='RMS'"]),
        (dict(positional_embedding_type="rotary"), ["positional_embedding_type='rotary'"]),
        (
            dict(attn_only=False, d_mlp=16, act_fn="gelu"),
            ["act_fn='gelu'", "blocks.0.attn.b_Q is not zero"],
        ),
        (dict(use_attn_scale=False), ["attention scale 1.0"]),
        (dict(attention_dir="bidirectional"), ["attention_dir='bidirectional'"]),
    ],
    ids=["vocab", "rms", "rotary", "gelu", "scale", "bidirectional"],
)
def test_unsupported_settings_are_named(overrides, words):
    model = hooked(**overrides)
    if "act_fn='gelu'" not in words:
        with torch.no_grad():
            for b in interop.ATTN_BIASES:
                getattr(model.blocks[0].attn, b).zero_()
    else:
        with torch.no_grad():
            model.blocks[0].attn.b_Q.fill_(0.5)
    with pytest.raises(ValueError, match="minicount cannot run this HookedTransformer") as e:
        interop.from_hooked_transformer(model)
    for w in words:
        assert w in str(e.value)


def test_eos_attribution_with_transformer_lens_tools(tokens):
    """Per-head EOS contributions from the cache's stacked head results equal minicount's."""
    config = mc.ModelConfig()
    params = random_model(config, seed=3)
    model = interop.to_hooked_transformer(params, config)
    _, cache = model.run_with_cache(torch.from_numpy(tokens))
    stack = cache.stack_head_results(layer=-1)  # [heads, B, T, d_model]
    stack = cache.apply_ln_to_stack(stack, layer=-1)  # no LayerNorm here: unchanged
    theirs = (stack @ model.W_U[:, EOS]).detach().numpy()  # [heads, B, T]
    ours, _ = eos_contributions(params, tokens, config)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
