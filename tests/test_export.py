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


def test_export_has_the_training_formats_chat_template(tiny_run, tok_dir, tmp_path):
    """Prompt/completion and messages records are trained as "user: P\nassistant: C": the export's chat template
    gives that text, so mlx_lm lora on prompt/completion data (it failed: no chat_template) and the server's chat
    endpoint format chats as the model saw them."""
    from mlx_lm import load

    from mlx_pn.data.sources import record_text

    export_mlx_lm(model_for(tiny_run[1].tokenizer.vocab_size), tok_dir, tmp_path / "m", verify=False)
    _, tok = load(str(tmp_path / "m"))
    msgs = [{"role": "user", "content": "What is a tort?"}, {"role": "assistant", "content": "A civil wrong."}]
    trained, _ = record_text({"prompt": msgs[0]["content"], "completion": msgs[1]["content"]}, "x")
    assert tok.apply_chat_template(msgs, tokenize=False) == trained
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True) == "user: What is a tort?\nassistant:"
    three = msgs + [{"role": "user", "content": "And a crime?"}]
    assert tok.apply_chat_template(three, tokenize=False) == record_text({"messages": three}, "x")[0]


def test_export_copies_no_symlinked_tokenizer_file(tiny_run, tok_dir, tmp_path):
    """A special_tokens_map.json linked to an outside file had that file's content copied into the export."""
    import shutil

    fake = tmp_path / "tok"
    shutil.copytree(tok_dir, fake)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publication")
    (fake / "special_tokens_map.json").unlink(missing_ok=True)
    (fake / "special_tokens_map.json").symlink_to(secret)
    with pytest.raises(ExportError, match="special_tokens_map.json is a symbolic link"):
        export_mlx_lm(model_for(tiny_run[1].tokenizer.vocab_size), fake, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("content", ['{"model": {"vocab"', '{"model": {}}', "[]", ""])
def test_a_damaged_tokenizer_json_is_one_line(tiny_run, tok_dir, tmp_path, content):
    import shutil

    fake = tmp_path / "tok"
    shutil.copytree(tok_dir, fake)
    (fake / "tokenizer.json").write_text(content)
    with pytest.raises(ExportError, match="tokenizer.json is not a readable tokenizer"):
        export_mlx_lm(model_for(tiny_run[1].tokenizer.vocab_size), fake, tmp_path / "m")
