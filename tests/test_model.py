import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.models import byte_lm
from mlx_pn.models.build import PRESETS, build_model, model_args
from mlx_pn.models.transformer import ModelArgs, Transformer


def tiny_args(**kw):
    d = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)
    d.update(kw)
    return ModelArgs(**d)


@pytest.mark.parametrize("tied,kv_heads", [(True, 4), (False, 2), (True, 1)])
def test_logits_equal_mlx_lm_llama(tied, kv_heads):
    """Our parameter names and math are mlx-lm's llama: loading our weights there gives the same logits."""
    from mlx_lm.models import llama

    args = tiny_args(tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    model = build_model(args, seed=1)
    ref = llama.Model(llama.ModelArgs.from_dict(args.to_dict()))
    ref.load_weights(tree_flatten(model.parameters()), strict=True)  # raises on any name/shape mismatch
    x = mx.array(np.random.default_rng(0).integers(0, 97, (2, 11)))
    assert mx.abs(model(x) - ref(x)).max().item() < 1e-5
    assert ("lm_head.weight" in dict(tree_flatten(model.parameters()))) == (not tied)


def test_kv_cache_decoding_matches_full_forward():
    from mlx_lm.models.cache import make_prompt_cache

    model = build_model(tiny_args(num_key_value_heads=2), seed=2)
    x = mx.array(np.random.default_rng(1).integers(0, 97, (1, 9)))
    full = model(x)
    cache = make_prompt_cache(model)
    parts = [model(x[:, :4], cache=cache), model(x[:, 4:6], cache=cache)]
    parts += [model(x[:, i:i + 1], cache=cache) for i in range(6, 9)]
    assert mx.abs(mx.concatenate(parts, axis=1) - full).max().item() < 1e-5


def test_causality():
    model = build_model(tiny_args(), seed=3)
    x = mx.array([[5, 6, 7, 8, 9]])
    y = mx.array([[5, 6, 7, 1, 2]])
    assert mx.abs(model(x)[:, :3] - model(y)[:, :3]).max().item() < 1e-6
    assert mx.abs(model(x)[:, 3:] - model(y)[:, 3:]).max().item() > 1e-4


def test_init_loss_near_log_vocab():
    import math

    from mlx_pn.train.losses import cross_entropy

    model = build_model(tiny_args(vocab_size=500), seed=0)
    x = mx.array(np.random.default_rng(0).integers(0, 500, (4, 33)))
    loss = cross_entropy(model, x[:, :-1], x[:, 1:]).item()
    assert abs(loss - math.log(500)) < 0.3


def test_same_seed_same_weights():
    a, b = build_model(tiny_args(), seed=7), build_model(tiny_args(), seed=7)
    c = build_model(tiny_args(), seed=8)
    fa, fb, fc = (dict(tree_flatten(m.parameters())) for m in (a, b, c))
    assert all(mx.array_equal(fa[k], fb[k]).item() for k in fa)
    assert not mx.array_equal(fa["model.layers.0.mlp.up_proj.weight"], fc["model.layers.0.mlp.up_proj.weight"]).item()


def test_paper_sizes():
    """Paper SLM ~121-126M, LLM ~756-771M with a 32k tied vocabulary (paper-notes §7; SwiGLU 2/3 width)."""
    def count(preset):
        a = ModelArgs(**PRESETS[preset], vocab_size=32000)
        D, F, L, V = a.hidden_size, a.intermediate_size, a.num_hidden_layers, a.vocab_size
        return L * (4 * D * D + 3 * D * F + 2 * D) + V * D + D

    assert 118e6 < count("slm") < 130e6
    assert 740e6 < count("llm") < 790e6
    m = Transformer(ModelArgs(**PRESETS["tiny"], vocab_size=300))
    a = m.args
    assert m.num_params() == (
        a.num_hidden_layers * (4 * a.hidden_size**2 + 3 * a.hidden_size * a.intermediate_size + 2 * a.hidden_size)
        + 300 * a.hidden_size + a.hidden_size)


def test_bad_heads_clear_error():
    with pytest.raises(ValueError, match="num_attention_heads"):
        ModelArgs(hidden_size=30, num_attention_heads=4)


def test_model_config_keys_are_the_model_args_fields():
    """config.ModelConfig (the --model.X keys) repeats the models' field names and defaults (config imports
    no model code): every key but the preset is a field of the token or the byte ModelArgs, and a set default
    is the model's own."""
    import dataclasses

    from mlx_pn.config import ModelConfig

    token = {f.name: f.default for f in dataclasses.fields(ModelArgs)}
    byte = {f.name: f.default for f in dataclasses.fields(byte_lm.ModelArgs)}
    for f in dataclasses.fields(ModelConfig):
        if f.name == "preset":
            continue
        assert f.name in token or f.name in byte, f"ModelConfig.{f.name} is no model field"
        if f.default is not None and f.name != "frontend":
            assert f.default == {**byte, **token}[f.name], f.name
    assert ModelConfig().frontend == "token" and byte["frontend"] == "byte"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_through_its_config_section(preset):
    from mlx_pn.config import ModelConfig

    a = model_args(ModelConfig(preset=preset, num_key_value_heads=1), 300)
    assert isinstance(a, ModelArgs) and a.vocab_size == 300 and a.num_key_value_heads == 1
    assert {k: getattr(a, k) for k in PRESETS[preset]} == PRESETS[preset]
    b = model_args(ModelConfig(preset=preset, frontend="byte", byte_dim=32), 300)
    assert isinstance(b, byte_lm.ModelArgs) and b.byte_dim == 32 and b.hidden_size == a.hidden_size


def test_unknown_preset_names_the_section():
    from mlx_pn.config import ConfigError, ModelConfig

    with pytest.raises(ConfigError, match=r"large.preset: unknown preset 'cpu-larg'; did you mean 'cpu-large'"):
        model_args(ModelConfig(preset="cpu-larg"), 300, "large")


def test_multi_token_step_on_a_filled_cache_uses_mlx_lm_mask():
    """Several new positions after cached ones (offset > 0): mlx-lm's "causal" mask, aligned to the end, gives
    the logits of a boolean mask built by hand (the trunk's own mask before it used mlx-lm's)."""
    from mlx_lm.models.cache import make_prompt_cache

    model = build_model(tiny_args(), seed=4)
    x = mx.array(np.random.default_rng(2).integers(0, 97, (1, 8)))
    cache = make_prompt_cache(model)
    model(x[:, :5], cache=cache)
    got = model(x[:, 5:], cache=cache)
    ref_cache = make_prompt_cache(model)
    model(x[:, :5], cache=ref_cache)
    h = model.model.embed_tokens(x[:, 5:])
    mask = mx.arange(8)[None, :] <= mx.arange(5, 8)[:, None]  # (3, 8): new position i sees keys <= 5 + i
    for layer, c in zip(model.layers, ref_cache):
        h = layer(h, mask, c)
    assert mx.array_equal(got, model.head(model.model.norm(h))).item()
