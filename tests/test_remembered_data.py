"""A run remembers its data: after `prepare --corpus X --out R`, later commands on R default to X."""

import json

import pytest
import yaml

from conftest import TINY


@pytest.fixture
def config_without_data(tmp_path):
    """tiny.yaml without its data section (a config file's data keys are the user's and would win)."""
    d = yaml.safe_load(TINY.read_text())
    d.pop("data", None)
    path = tmp_path / "tiny-nodata.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _texts(folder, n, salt):
    """n distinct documents (random words: no two are near duplicates, which would land in one split)."""
    import random

    rng = random.Random(salt)
    vocab = [f"{salt}{w}" for w in ("alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "light",
                                    "north", "seven", "green", "house", "field", "music", "bread", "train", "glass")]
    folder.mkdir()
    for i in range(n):
        (folder / f"d{i:02d}.txt").write_text(f"Document {i}. " + " ".join(rng.choice(vocab) for _ in range(80)))


def test_later_commands_default_to_the_runs_prepared_sources(tmp_path, capsys, config_without_data):
    from mlx_pn.cli import parse
    from recipes import prepare, pretrain

    texts = tmp_path / "texts"
    _texts(texts, 40, "mine")
    out = tmp_path / "run"
    prepare.main(["--config", str(config_without_data), "--out", str(out), "--corpus", str(texts), "--data.vocab_size", "400",
                  "--data.domains", "legal=bundled:legal", "--data.max_docs", "200"])
    stored = json.loads((out / "data" / "sources.json").read_text())
    assert stored["generic"] == str(texts) and stored["vocab_size"] == 400 and stored["domains"] == {"legal": "bundled:legal"}

    # no data flags: the run's own sources (before: "tokenizer was trained on other generic text ... delete it")
    cfg, _ = parse(pretrain.build_parser(), ["--config", str(config_without_data), "--out", str(out)])
    assert cfg.data.generic == str(texts) and cfg.data.vocab_size == 400 and cfg.data.max_docs == 200
    assert cfg.data.domains == {"legal": "bundled:legal"}
    assert "using them" in capsys.readouterr().err
    # an added domain goes on top of the remembered ones
    cfg, _ = parse(pretrain.build_parser(), ["--config", str(config_without_data), "--out", str(out),
                                             "--data.add_domains", "drama=bundled:drama"])
    assert cfg.data.domains == {"legal": "bundled:legal", "drama": "bundled:drama"}
    pretrain.main(["--config", str(config_without_data), "--out", str(out), "--pretrain.steps", "2", "--pretrain.eval_every", "2"])
    assert (out / "pretrain" / "summary.json").exists()


def test_an_explicit_other_source_is_still_a_clear_error(tmp_path, config_without_data):
    from recipes import prepare, pretrain

    texts, other = tmp_path / "texts", tmp_path / "other"
    _texts(texts, 40, "mine")
    _texts(other, 40, "theirs")
    out = tmp_path / "run"
    prepare.main(["--config", str(config_without_data), "--out", str(out), "--corpus", str(texts), "--data.vocab_size", "400",
                  "--data.domains", "legal=bundled:legal", "--data.max_docs", "200"])
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--config", str(config_without_data), "--out", str(out), "--data.generic", str(other),
                       "--pretrain.steps", "2"])
    assert e.value.code == 2
    assert json.loads((out / "data" / "sources.json").read_text())["generic"] == str(texts)  # nothing replaced
