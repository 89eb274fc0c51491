from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_pn.cli import build_parser, parse
from mlx_pn.config import Config, ConfigError, leaf_keys, load_config
from mlx_pn.models.build import model_args

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))


def test_precedence_cli_over_file_over_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("pretrain:\n  lr: 1.0e-4\n  steps: 7\n")
    cfg = load_config(f, {"pretrain.steps": "9"})
    assert cfg.pretrain.lr == 1e-4 and cfg.pretrain.steps == 9 and cfg.pretrain.batch_size == Config().pretrain.batch_size


def test_typo_in_file_names_file_key_and_suggestion(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("pretrain:\n  setps: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'pretrain.setps'; did you mean 'pretrain.steps'"):
        load_config(f)


def test_typo_on_command_line_suggests(capsys):
    with pytest.raises(SystemExit):
        parse(build_parser("x"), ["--pretrain.lrr", "3e-4"])
    assert "did you mean '--pretrain.lr'" in capsys.readouterr().err


def test_wrong_type_is_clear(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("pretrain:\n  steps: many\n")
    with pytest.raises(ConfigError, match="'pretrain.steps' expects int"):
        load_config(f)
    with pytest.raises(ConfigError, match="expects float"):
        load_config(None, {"pretrain.lr": "fast"})


def test_unknown_preset_suggests():
    cfg = load_config(None, {"model.preset": "tinyy"})  # presets are the models' (mlx_pn.models.build)
    with pytest.raises(ConfigError, match="model.preset: unknown preset 'tinyy'; did you mean 'tiny'"):
        model_args(cfg.model, 1000)


def test_missing_config_file_is_clear():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope/missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_yaml_parses_and_builds(path):
    from mlx_pn.compare.grid import CompareConfig

    cfg = load_config(path, cls=CompareConfig if path.name.startswith("compare-") else Config)
    for section in ("model", "large"):
        args = model_args(getattr(cfg, section), cfg.data.vocab_size, section)
        assert args.vocab_size == cfg.data.vocab_size and args.hidden_size % args.num_attention_heads == 0
    assert path.read_text().startswith("#"), "each preset opens with a comment saying what it runs and how"


def test_help_lists_every_key():
    text = build_parser("x").format_help()
    for key in leaf_keys(Config):
        assert f"--{key}" in text


def test_domains_from_command_line():
    cfg = load_config(None, {"data.domains": "a=bundled:legal,b=/x/y"})
    assert cfg.data.domains == {"a": "bundled:legal", "b": "/x/y"}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(leaf_keys(Config))), st.text(max_size=12), max_size=4))
def test_fuzzed_overrides_either_load_or_raise_config_error(overrides):
    """Any string for any key: a valid config or a ConfigError, never another exception."""
    try:
        load_config(None, overrides)
    except ConfigError:
        pass


def test_stlm_options_refused_where_they_cannot_work():
    from mlx_pn.methods import load_config  # with the methods' own rules

    with pytest.raises(ConfigError, match="slm-pn projects"):
        load_config(None, {"method": "slm-pn", "model.share_ffn": "true"})
    with pytest.raises(ConfigError, match="slm-d distils"):
        load_config(None, {"method": "slm-d", "model.frontend": "byte"})
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_config(None, {"model.frontend": "byte", "model.share_attn_out": "true"})
    with pytest.raises(ConfigError, match="frontend must be"):
        load_config(None, {"model.frontend": "bytes"})
    assert load_config(None, {"method": "slm-mix", "model.share_ffn": "true"}).model.share_ffn


def test_a_file_section_starts_from_its_own_fields_defaults(tmp_path):
    """A `finetune:` section that sets only its steps keeps the fine-tuning defaults (lr, early stopping), not the
    pretraining ones; a `large:` section without a preset keeps the large model's."""
    from mlx_pn.config import Config

    f = tmp_path / "c.yaml"
    f.write_text("finetune:\n  steps: 7\nlarge:\n  hidden_size: 96\npretrain:\n  steps: 5\n")
    cfg, default = load_config(f), Config()
    assert cfg.finetune.steps == 7 and cfg.pretrain.steps == 5
    for key in ("lr", "min_lr", "warmup", "patience", "max_epochs", "eval_every"):
        assert getattr(cfg.finetune, key) == getattr(default.finetune, key), key
    assert cfg.finetune.lr != cfg.pretrain.lr and cfg.finetune.patience > 0
    assert cfg.large.preset == default.large.preset == "cpu-large" and cfg.large.hidden_size == 96


def test_a_key_given_twice_in_a_config_file_is_an_error(tmp_path):
    """YAML keeps the last of two `pretrain:` sections silently: the first one's lr fell back to the default."""
    path = tmp_path / "twice.yaml"
    path.write_text("pretrain:\n  lr: 0.01\nmodel:\n  preset: tiny\npretrain:\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'pretrain' appears twice in one section \(lines 1 and 5\)"):
        load_config(path)
    (tmp_path / "inner.yaml").write_text("pretrain:\n  lr: 0.01\n  lr: 0.02\n")
    with pytest.raises(ConfigError, match="key 'lr' appears twice"):
        load_config(tmp_path / "inner.yaml")
    (tmp_path / "ok.yaml").write_text("pretrain:\n  lr: 0.01\nfinetune:\n  lr: 0.02\n")
    assert load_config(tmp_path / "ok.yaml").pretrain.lr == 0.01


def test_config_help_lists_the_preset_names():
    text = build_parser("x").format_help()
    assert all(name in text for name in ("tiny", "quickstart", "paper-slm", "compare-tiny"))
