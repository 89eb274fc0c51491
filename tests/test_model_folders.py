"""An untrusted model folder's config.json is checked before anything is built (a folder can come from anywhere):
10**7 layers filled 22 GB until the OOM killer ended the process; "64", -64, 0 heads and a 1e10 vocabulary were
TypeError / ValueError / ZeroDivisionError / OverflowError tracebacks."""

import json
import os

import pytest

from mlx_pn.models.build import CheckpointError, build_model, load_model, save_model
from mlx_pn.models.transformer import ModelArgs


@pytest.fixture
def folder(tmp_path):
    model = build_model(ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=100), seed=0)
    return save_model(tmp_path / "m", model)


@pytest.mark.parametrize("field, value, message", [
    ("num_hidden_layers", 10**7, "must be between 1 and 1,024, got 10,000,000"),
    ("hidden_size", "64", "must be a whole number, got '64'"),
    ("hidden_size", -64, "must be between 1 and"),
    ("num_attention_heads", 0, "must be between 1 and"),
    ("vocab_size", 10**10, "must be between 1 and 16,777,216"),
    ("intermediate_size", 2.5, "must be a whole number"),
    ("num_attention_heads", 5, "must divide hidden_size"),
    ("hidden_size", None, "field 'hidden_size' is missing"),
])
@pytest.mark.parametrize("hashed", [True, False])
def test_a_hostile_config_is_refused_before_anything_is_built(folder, field, value, message, hashed):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    if value is None:
        cfg.pop(field)
    else:
        cfg[field] = value
    path.write_text(json.dumps(cfg))
    if not hashed:  # a folder from elsewhere: no hashes, no marker
        for f in folder.iterdir():
            if f.name != "config.json" and f.suffix != ".safetensors":
                f.unlink()
    with pytest.raises(CheckpointError, match=f"config.json: field '{field}'|config.json: .*{message}") as e:
        load_model(folder)
    assert message in str(e.value)


def test_weights_too_large_for_memory_are_refused_before_allocation(folder, monkeypatch):
    from mlx_pn import memory

    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_size=8192, num_hidden_layers=1000, intermediate_size=32768, num_attention_heads=64,
               num_key_value_heads=64)
    (folder / "config.json").write_text(json.dumps(cfg))
    os.unlink(folder / "sha256.json")
    monkeypatch.setattr(memory, "available_bytes", lambda: (8 << 30, "test"))
    monkeypatch.setattr("mlx_pn.models.build.verify_model_folder", lambda f: None)
    with pytest.raises(memory.OutOfMemoryError, match="parameters"):
        load_model(folder)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_config_that_is_not_a_json_object_is_one_line(folder, content):
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match="config.json (is not readable JSON|holds a JSON list)"):
        load_model(folder)


def test_a_config_json_that_is_a_link_is_refused(folder, tmp_path):
    elsewhere = tmp_path / "passwd"
    elsewhere.write_text("root:x:0:0")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="config.json is a symbolic link"):
        load_model(folder)
