"""The export's chat template is the training format of chat records (issue 23): mlx-lm's tokenizer wrapper turns
prompt/completion and messages into "user: P\\nassistant: C", the same ids training saw, so `mlx_lm lora` on
prompt/completion data and mlx_lm.server's chat endpoint use the model's own format."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from mlx_pn.config import ModelConfig
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.models.build import build_model, model_args

    tok = tiny_run[1].tokenizer
    model = build_model(model_args(ModelConfig(preset="tiny"), tok.vocab_size), seed=3)
    out = tmp_path_factory.mktemp("chat") / "export"
    export_mlx_lm(model, tok.hf_dir, out, verify=False)
    return out, tok


def test_apply_chat_template_gives_the_training_format_and_ids(exported):
    from mlx_lm.utils import load_tokenizer

    from mlx_pn.data.sources import record_text

    out, tok = exported
    wrapper = load_tokenizer(out)
    record = {"prompt": "What is a tort?", "completion": "A civil wrong."}
    messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    text, _ = record_text(record, "x")
    assert wrapper.apply_chat_template(messages, tokenize=False) == text == "user: What is a tort?\nassistant: A civil wrong."
    chat = {"messages": messages + [{"role": "user", "content": "More?"}]}
    assert wrapper.apply_chat_template(chat["messages"], tokenize=False) == record_text(chat, "x")[0]
    # the ids are those training saw (no BOS), and the generation prompt is their prefix
    ids = wrapper.apply_chat_template(messages, return_dict=False)
    assert list(ids) == list(tok.encode(text))
    prompt = wrapper.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    assert prompt == "user: What is a tort?\nassistant:"


def test_mlx_lm_completions_dataset_uses_it(exported):
    """mlx_lm lora's prompt/completion loader: it failed with 'chat_template is not set' before."""
    from mlx_lm.tuner.datasets import CompletionsDataset
    from mlx_lm.utils import load_tokenizer

    out, tok = exported
    wrapper = load_tokenizer(out)
    ds = CompletionsDataset([{"prompt": "Hi", "completion": "there"}], wrapper, "prompt", "completion", True)
    tokens, offset = ds.process(ds._data[0])
    assert list(tokens) == list(tok.encode("user: Hi\nassistant: there")) and 0 < offset < len(tokens)
