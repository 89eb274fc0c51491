"""A model folder is untrusted input (issue 23): every hostile config.json / tokenizer.json is one line naming the
file, the field and the fix, raised before anything is built; an export copies no file a symlink points at."""

from __future__ import annotations

import json
import os

import pytest

from mlx_pn.config import ConfigError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model folder written by save_model (vocabulary 300)."""
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import build_model, model_args, save_model

    model = build_model(model_args(ModelConfig(preset="tiny"), 300), seed=1)
    return save_model(tmp_path_factory.mktemp("untrusted") / "final", model)


def _copy_with(saved, tmp_path, **fields):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    (folder / "sha256.json").unlink()  # a folder from elsewhere: no hashes to stop it first
    (folder / ".mlx-pn").unlink(missing_ok=True)
    for p in folder.glob(".mlx-pn*"):
        p.unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


CASES = {
    "layers 10**7 (was the OOM killer, rc 137)": ({"num_hidden_layers": 10**7}, r"config.json: a model of .* parameters .* needs about"),
    "layers 1e5": ({"num_hidden_layers": 100_000}, r"needs about .* GB, more than 90% of"),
    "hidden_size a string": ({"hidden_size": "64"}, r"config.json: hidden_size must be a whole number >= 1, got '64' \(str\)"),
    "hidden_size negative": ({"hidden_size": -64}, r"hidden_size must be a whole number >= 1, got -64"),
    "heads 0": ({"num_attention_heads": 0}, r"num_attention_heads must be a whole number >= 1, got 0"),
    "vocab 1e10 (a float)": ({"vocab_size": 1e10}, r"vocab_size must be a whole number >= 1, got 10000000000.0 \(float\)"),
    "vocab 10**10": ({"vocab_size": 10**10}, r"a model of .* parameters .* vocabulary 10000000000\) needs about"),
    "vocab missing": ({"vocab_size": None}, r"vocab_size must be a whole number >= 1, got None"),
    "heads not dividing": ({"num_attention_heads": 3}, r"hidden_size 64 must be divisible by num_attention_heads 3"),
    "bool layers": ({"num_hidden_layers": True}, r"num_hidden_layers must be a whole number >= 1, got True"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_config_is_one_line_before_building(saved, tmp_path, case, monkeypatch):
    from mlx_pn.models import build

    fields, match = CASES[case]
    folder = _copy_with(saved, tmp_path, **fields)
    monkeypatch.setattr(build, "model_from_config", lambda cfg: pytest.fail("built before the config was checked"))
    with pytest.raises(ConfigError, match=match) as e:
        build.load_model(folder)
    assert "\n" not in str(e.value) and str(folder / "config.json") in str(e.value)


def test_config_symlink_and_garbage_are_refused(saved, tmp_path):
    from mlx_pn.models.build import load_model

    folder = _copy_with(saved, tmp_path)
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (folder / "config.json").unlink()
    os.symlink(outside, folder / "config.json")
    with pytest.raises(ConfigError, match=r"config.json is a symlink \(to .*passwd\)") as e:
        load_model(folder)
    assert "\n" not in str(e.value)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text('{"hidden_size": 64, ')  # truncated
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON"):
        load_model(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"config.json holds a JSON list"):
        load_model(folder)


def test_a_good_folder_still_loads(saved):
    from mlx_pn.models.build import load_model

    assert load_model(saved).args.vocab_size == 300


TOKENIZER_CASES = {
    "malformed": ("{not json", r"tokenizer.json is not valid JSON"),
    "truncated": ('{"model": {"vocab": {"a": 0, "b"', r"tokenizer.json is not valid JSON"),
    "vocab-less": ('{"model": {"type": "BPE"}}', r"tokenizer.json: model.vocab is missing or empty"),
    "a list": ("[]", r"tokenizer.json: model.vocab is missing or empty"),
    "bad ids": ('{"model": {"vocab": {"a": "0"}}}', r"model.vocab has an id that is not a whole number"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES), ids=list(TOKENIZER_CASES))
def test_hostile_tokenizer_json_is_one_line_in_export(saved, tmp_path, case):
    from mlx_pn.models.build import load_model
    from mlx_pn.export import export_mlx_lm

    text, match = TOKENIZER_CASES[case]
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        export_mlx_lm(load_model(saved), tok, tmp_path / "out")
    assert "\n" not in str(e.value) and str(tok / "tokenizer.json") in str(e.value)
    assert not (tmp_path / "out").exists()


def test_export_copies_no_file_a_symlink_points_at(tiny_run, tmp_path):
    """special_tokens_map.json symlinked to a file outside: refused, and nothing of that file is exported."""
    import shutil

    from mlx_pn.config import ModelConfig
    from mlx_pn.export import ExportError, export_mlx_lm
    from mlx_pn.models.build import build_model, model_args

    src = tiny_run[1].tokenizer
    tok = tmp_path / "tok"
    shutil.copytree(src.hf_dir, tok)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT")
    (tok / "special_tokens_map.json").unlink(missing_ok=True)
    os.symlink(secret, tok / "special_tokens_map.json")
    model = build_model(model_args(ModelConfig(preset="tiny"), src.vocab_size), seed=3)
    with pytest.raises(ExportError, match=r"special_tokens_map.json is a symlink \(to .*secret.txt\)") as e:
        export_mlx_lm(model, tok, tmp_path / "out", verify=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    (tok / "special_tokens_map.json").unlink()
    export_mlx_lm(model, tok, tmp_path / "out", verify=False)  # without the link: exported
    assert not any("SECRET" in p.read_text(errors="ignore") for p in (tmp_path / "out").iterdir() if p.is_file())
