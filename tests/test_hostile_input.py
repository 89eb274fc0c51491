"""A hostile user and a hostile environment (issue 15, part B): every bad number, a model too large for memory,
an export that must not lie, Ctrl-C / SIGTERM, a full or read-only disk, one 50 MB line. Each case is one clear
line (naming the key or the folder, the value and the fix) or correct behaviour, never a traceback."""

from __future__ import annotations

import pytest

from mlx_pn.config import ConfigError
from mlx_pn.methods import load_config

from conftest import TINY

# --- 1. every numeric field validated at load -------------------------------------------------------

NUMERIC_CASES = {
    "eval_every 0": ({"pretrain.eval_every": "0"}, r"pretrain.eval_every must be >= 1, got 0; it is a period"),
    "save_every 0": ({"finetune.save_every": "0"}, r"finetune.save_every must be >= 1, got 0"),
    "log_every 0": ({"pretrain.log_every": "0"}, r"pretrain.log_every must be >= 1, got 0"),
    "warmup -5": ({"pretrain.warmup": "-5"}, r"pretrain.warmup must be >= 0, got -5"),
    "beta1 nan": ({"pretrain.beta1": "nan"}, r"pretrain.beta1 must be in \[0, 1\), got nan"),
    "beta2 1": ({"finetune.beta2": "1"}, r"finetune.beta2 must be in \[0, 1\), got 1.0"),
    "eps -1": ({"pretrain.eps": "-1"}, r"pretrain.eps must be a finite number > 0, got -1.0"),
    "eps 0": ({"pretrain.eps": "0"}, r"pretrain.eps must be a finite number > 0, got 0.0"),
    "grad_clip nan": ({"pretrain.grad_clip": "nan"}, r"pretrain.grad_clip must be a finite number >= 0, got nan; 0 turns"),
    "grad_clip inf": ({"pretrain.grad_clip": "inf"}, r"pretrain.grad_clip must be a finite number >= 0, got inf"),
    "min_lr nan": ({"pretrain.min_lr": "nan"}, r"pretrain.min_lr must be a finite number >= 0, got nan"),
    "weight_decay nan": ({"finetune.weight_decay": "nan"}, r"finetune.weight_decay must be a finite number >= 0"),
    "weight_decay -1": ({"pretrain.weight_decay": "-1"}, r"pretrain.weight_decay must be a finite number >= 0"),
    "temperature nan": ({"distill.temperature": "nan"}, r"distill.temperature must be a finite number > 0, got nan"),
    "temperature 0": ({"distill.temperature": "0"}, r"distill.temperature > 0"),
    "hidden_size 0": ({"model.hidden_size": "0"}, r"model.hidden_size must be >= 1, got 0"),
    "heads 0": ({"model.num_attention_heads": "0"}, r"model.num_attention_heads must be >= 1, got 0"),
    "layers 0": ({"large.num_hidden_layers": "0"}, r"large.num_hidden_layers must be >= 1, got 0"),
    "hidden not divisible by the preset's heads": (
        {"model.hidden_size": "65"}, r"model.hidden_size=65 must be divisible by model.num_attention_heads=4 "
                                     r"\(preset 'tiny' \+ overrides\)"),
    "large hidden not divisible": ({"large.hidden_size": "130"}, r"large.hidden_size=130 must be divisible"),
    "kv heads not dividing heads": ({"model.num_key_value_heads": "3"},
                                    r"model.num_attention_heads=4 must be a multiple of model.num_key_value_heads=3"),
    "cluster.k 0": ({"cluster.k": "0"}, r"cluster.k and cluster.k_importance must be >= 1"),
    "cluster.fit_windows 0": ({"cluster.fit_windows": "0"}, r"cluster.fit_windows must be >= 1, got 0"),
    "cluster.batch_size 0": ({"cluster.batch_size": "0"}, r"cluster.batch_size must be >= 1, got 0"),
    "cluster.window -5": ({"cluster.window": "-5"}, r"cluster.window must be >= 0, got -5"),
    "seq_len past the model's positions": (
        {"pretrain.seq_len": "40000"}, r"pretrain.seq_len=40000 is longer than model.max_position_embeddings=256 "
                                       r"\(preset 'tiny'\); lower pretrain.seq_len"),
    "finetune seq_len past the positions": ({"finetune.seq_len": "257"}, r"finetune.seq_len=257 is longer than"),
    "rope_theta nan": ({"model.rope_theta": "nan"}, r"model.rope_theta must be a finite number > 0"),
    "tokenizer sample 0 MB": ({"data.tokenizer_sample_mb": "0"}, r"data.tokenizer_sample_mb must be a finite"),
}


@pytest.mark.parametrize("case", list(NUMERIC_CASES), ids=list(NUMERIC_CASES))
def test_numeric_fields_checked_at_load(case):
    overrides, match = NUMERIC_CASES[case]
    with pytest.raises(ConfigError, match=match) as e:
        load_config(TINY, overrides)
    assert "\n" not in str(e.value)


def test_valid_numbers_still_load():
    cfg = load_config(TINY, {"pretrain.grad_clip": "0", "pretrain.warmup": "0", "pretrain.seq_len": "256",
                             "model.hidden_size": "128", "pretrain.beta1": "0", "distill.temperature": "0.5"})
    assert (cfg.pretrain.grad_clip, cfg.pretrain.seq_len, cfg.model.hidden_size) == (0.0, 256, 128)


def test_model_args_refuse_bad_sizes_where_they_are_built():
    """model_args (every model is built through it) checks the resolved preset too, not only the config load."""
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import model_args

    with pytest.raises(ConfigError, match=r"large.hidden_size=100 must be divisible by large.num_attention_heads=8"):
        model_args(ModelConfig(preset="cpu-large", hidden_size=100), 1024, "large")
    with pytest.raises(ConfigError, match=r"model.num_hidden_layers must be >= 1, got 0"):
        model_args(ModelConfig(preset="tiny", num_hidden_layers=0), 1024)


def test_cluster_k_0_is_an_error_before_any_work(tmp_path):
    """`recipes.cluster --k 0` used to say "too large, using k=1" and write a folder named k0."""
    from mlx_pn.clustering.stage import run_clustering

    cfg = load_config(TINY, {"out": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"--k 0: a cluster count must be >= 1"):
        run_clustering(cfg.cluster, 64, tmp_path / "clusters", data=None, ks=[16, 0])
    assert not (tmp_path / "clusters").exists()  # nothing embedded, no k0 folder
