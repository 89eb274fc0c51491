import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_pn.export import ExportError, export_mlx_lm
from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs


@pytest.fixture(scope="module")
def tok_dir(tiny_run):
    return tiny_run[1].tokenizer.hf_dir


def model_for(vocab, tied=True):
    return build_model(ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=tied), seed=5)


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_identical_logits_and_generate(tiny_run, tok_dir, tmp_path, tied):
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    vocab = tiny_run[1].tokenizer.vocab_size
    model = model_for(vocab, tied)
    report = export_mlx_lm(model, tok_dir, tmp_path / "m")
    # Not 0: our MLP's fast silu (mlx_pn.models.ops, within 2e-6 of mlx-lm's nn.silu) -> logits within ~2e-7
    # measured; 1e-5 is 10x below the export verification's own tolerance (1e-4)
    assert report["max_abs_logit_diff"] <= 1e-5
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is tied and cfg["model_type"] == "llama" and cfg["eos_token_id"] == 2
    lm, tok = load(str(tmp_path / "m"))
    x = mx.array(np.random.default_rng(0).integers(3, vocab, (2, 17)))
    assert mx.abs(lm(x) - model(x)).max().item() <= 1e-5
    text = generate(lm, tok, "The law", max_tokens=8, sampler=make_sampler(temp=0.0))
    assert isinstance(text, str) and len(tok.encode(text, add_special_tokens=False)) >= 1


def test_quantized_export_loads_and_generates(tiny_run, tok_dir, tmp_path):
    from mlx_lm import generate, load

    model = model_for(tiny_run[1].tokenizer.vocab_size)
    report = export_mlx_lm(model, tok_dir, tmp_path / "q", quantize=4, group_size=32)
    assert report["argmax_agreement"] > 0.5
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 4
    lm, tok = load(str(tmp_path / "q"))
    assert isinstance(generate(lm, tok, "A", max_tokens=4), str)


def test_existing_export_dir_is_refused(tiny_run, tok_dir, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("precious")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_mlx_lm(model_for(tiny_run[1].tokenizer.vocab_size), tok_dir, tmp_path / "m")
    assert (tmp_path / "m" / "keep.txt").read_text() == "precious"


def test_vocab_mismatch_is_refused(tok_dir, tmp_path):
    with pytest.raises(ExportError, match="has 1024 ids but the model's vocab_size is 999"):
        export_mlx_lm(model_for(999), tok_dir, tmp_path / "m")
