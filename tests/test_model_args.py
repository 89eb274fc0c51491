"""Model arguments are mlx-lm's (BaseModelArgs), one table maps a config to its classes, each check is written once
and names the key it is about."""

import json

import pytest
from mlx_lm.models.base import BaseModelArgs

from mlx_pn.config import ConfigError, load_config
from mlx_pn.models import byte_lm
from mlx_pn.models.build import CLASSES, CheckpointError, build_model, load_model, make_args, model_from_config, save_model
from mlx_pn.models.projected import ProjectedArgs, build_projected, load_projected, projected_config
from mlx_pn.models.transformer import ModelArgs, Transformer

TINY = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4)


def test_args_are_mlx_lm_base_model_args_and_ignore_unknown_keys():
    for cls in (ModelArgs, ProjectedArgs, byte_lm.ModelArgs):
        assert issubclass(cls, BaseModelArgs)
    args = ModelArgs.from_dict({**TINY, "vocab_size": 50, "eos_token_id": 2, "quantization": {"bits": 4}})
    assert args.to_dict()["hidden_size"] == 32 and "eos_token_id" not in args.to_dict()
    assert ModelArgs.from_dict(args.to_dict()) == args
    assert ProjectedArgs.from_dict({"k": 3, "junk": 1}).to_dict()["h"] == 3


def test_one_table_maps_a_config_to_its_classes():
    assert type(make_args(dict(TINY), 50)) is CLASSES["token"][0]
    assert type(make_args({**TINY, "frontend": "byte", "byte_dim": 16, "byte_heads": 2}, 50)) is CLASSES["byte"][0]
    assert type(model_from_config({**TINY, "vocab_size": 50})) is CLASSES["token"][1] is Transformer
    with pytest.raises(ValueError, match="model.frontend must be 'token' or 'byte', got 'bits'"):
        make_args({**TINY, "frontend": "bits"}, 50)


@pytest.mark.parametrize("sizes, message", [
    (dict(hidden_size=30), r"model.hidden_size=30 must be divisible by model.num_attention_heads=4; pick heads"),
    (dict(num_key_value_heads=3), r"model.num_attention_heads=4 must be a multiple of model.num_key_value_heads=3"),
])
def test_the_heads_rule_is_the_same_built_directly_or_from_a_config(sizes, message):
    with pytest.raises(ValueError, match=message):
        ModelArgs(**{**TINY, **sizes})
    overrides = {f"model.{k}": str(v) for k, v in sizes.items()}
    with pytest.raises(ConfigError, match=message.replace("; pick heads", "")):
        _load_checked(overrides)


def _load_checked(overrides):
    """A config loaded as the recipes load it (the methods' checks resolve the preset)."""
    from mlx_pn.methods import load_config as load_checked

    return load_checked(None, {"model.preset": "tiny", **overrides})


@pytest.mark.parametrize("key, value, named, not_named", [
    ("mixture.expert_steps", "-1", "mixture.expert_steps must be >= 0, got -1", "projected."),
    ("projected.m", "-1", "projected.m and projected.h must be >= 0", "mixture."),
    ("projected.hypernet_hidden", "0", "hypernet_hidden=0", "mixture."),
    ("projected.code_shared", "1.5", "projected.code_shared must be in [0, 1]", "mixture."),
])
def test_a_bad_value_is_reported_under_its_own_key(key, value, named, not_named):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: value})
    assert named in str(e.value) and not_named not in str(e.value), str(e.value)


def test_load_projected_reads_the_folder_as_any_model_and_refuses_a_plain_one(tmp_path):
    args = ModelArgs(**TINY, vocab_size=50)
    pn = build_projected(args, ProjectedArgs(k=3, h=2), seed=0)
    save_model(tmp_path / "pn", pn, projected_config(pn, "slm-pn"))
    assert load_projected(tmp_path / "pn").pargs.to_dict() == pn.pargs.to_dict()
    save_model(tmp_path / "slm", build_model(args, seed=0))
    with pytest.raises(ValueError, match="has no 'projected' section"):
        load_projected(tmp_path / "slm")
    cfg = json.loads((tmp_path / "pn" / "config.json").read_text())
    cfg["num_attention_heads"] = 5  # the folder checks of load_model apply to a projected folder too
    (tmp_path / "pn" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="must divide hidden_size"):
        load_projected(tmp_path / "pn")
    assert type(load_model(tmp_path / "slm")) is Transformer
