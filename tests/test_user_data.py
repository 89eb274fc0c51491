"""A user's own data in mlx-lm's formats, --data.add_domains, fine-tuning budgets, progress lines."""

import json

import pytest

from mlx_pn.data.sources import DataError, fingerprint, load_documents, load_splits, source_files


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def texts(docs):
    return [d.text for d in docs]


def mlx_lm_folder(root, splits: dict[str, list]):
    for name, rows in splits.items():
        write_jsonl(root / f"{name}.jsonl", rows)
    return root


def test_text_records_keep_the_given_splits_exactly(tmp_path):
    rows = {s: [{"text": f"{s} document {i}"} for i in range(n)] for s, n in (("train", 30), ("valid", 4),
                                                                               ("test", 3))}
    folder = mlx_lm_folder(tmp_path / "law", rows)
    (folder / "notes.txt").write_text("not a split file: mlx-lm does not read it either")
    splits, how = load_splits(str(folder), "data.domains.law", 0.3, 0.3)
    assert {s: texts(d) for s, d in splits.items()} == {s: [r["text"] for r in v] for s, v in rows.items()}
    assert "train.jsonl/valid.jsonl/test.jsonl as given" in how
    assert [p.name for p in source_files(str(folder))] == ["train.jsonl", "valid.jsonl", "test.jsonl"]


def test_prompt_completion_records_flatten_to_user_assistant_lines(tmp_path):
    folder = mlx_lm_folder(tmp_path / "qa", {
        "train": [{"prompt": f"What is {i}?", "completion": f"It is {i}."} for i in range(5)],
        "valid": [{"prompt": "Why?", "completion": "Because."}],
        "test": [{"prompt": "Who?", "completion": "Me."}]})
    splits, _ = load_splits(str(folder), "data.domains.qa", 0.05, 0.05)
    assert texts(splits["train"])[2] == "user: What is 2?\nassistant: It is 2."
    assert texts(splits["valid"]) == ["user: Why?\nassistant: Because."]
    assert texts(splits["test"]) == ["user: Who?\nassistant: Me."]


def test_messages_records_flatten_to_role_lines(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}]
    folder = mlx_lm_folder(tmp_path / "chat", {"train": [{"messages": chat}] * 3, "valid": [{"messages": chat}],
                                               "test": [{"messages": chat[1:]}]})
    splits, _ = load_splits(str(folder), "data.domains.chat", 0.05, 0.05)
    assert texts(splits["train"]) == ["system: Be brief.\nuser: Hi\nassistant: Hello."] * 3
    assert texts(splits["test"]) == ["user: Hi\nassistant: Hello."]


def test_missing_test_split_is_carved_from_train_never_from_valid(tmp_path):
    train = [{"text": f"train document number {i}"} for i in range(200)]
    valid = [{"text": f"valid document {i}"} for i in range(5)]
    folder = mlx_lm_folder(tmp_path / "d", {"train": train, "valid": valid})
    splits, how = load_splits(str(folder), "data.domains.d", 0.05, 0.1)
    assert texts(splits["valid"]) == [r["text"] for r in valid]
    assert 5 <= len(splits["test"]) <= 40 and all(t.startswith("train document") for t in texts(splits["test"]))
    assert sorted(texts(splits["train"]) + texts(splits["test"])) == sorted(r["text"] for r in train)
    assert "test = 10% of train.jsonl's documents (no test.jsonl)" in how


def test_given_folder_and_plain_sources_mix(tmp_path):
    folder = mlx_lm_folder(tmp_path / "given", {"train": [{"text": "g train"}], "valid": [{"text": "g valid"}],
                                                "test": [{"text": "g test"}]})
    extra = tmp_path / "extra.jsonl"
    write_jsonl(extra, [{"text": f"extra {i}"} for i in range(100)])
    splits, how = load_splits(f"{folder},{extra}", "data.domains.m", 0.1, 0.1)
    assert "g valid" in texts(splits["valid"]) and "g test" in texts(splits["test"])
    assert sum(len(v) for v in splits.values()) == 103 and "split by document" in how


@pytest.mark.parametrize("row,match", [
    ({"prompt": "only a prompt"}, r"d.jsonl:2: a prompt/completion record needs both"),
    ({"messages": [{"role": "user"}]}, r"d.jsonl:2: messages\[0\] must be an object with string 'role' and 'content'"),
    ({"messages": []}, r"d.jsonl:2: 'messages' must be a non-empty list"),
    ({"body": "x"}, r"d.jsonl:2: expected an object with a string field 'text', or another of .*mlx-lm's formats"),
])
def test_bad_record_names_file_line_and_fix(tmp_path, row, match):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, row])
    with pytest.raises(DataError, match=match):
        load_documents(str(tmp_path / "d.jsonl"), "data.domains.d")


def test_split_folder_fingerprint_follows_its_files(tmp_path):
    folder = mlx_lm_folder(tmp_path / "f", {"train": [{"text": "a"}], "valid": [{"text": "b"}]})
    before = fingerprint(str(folder))
    write_jsonl(folder / "valid.jsonl", [{"text": "changed"}])
    assert fingerprint(str(folder)) != before


# --- the data stage on an mlx-lm folder, --data.add_domains, the unknown-domain error ------------------------


def test_add_domains_keeps_the_config_domains_and_prepare_keeps_given_splits(tiny_run, tmp_path, capsys):
    import shutil

    from conftest import tiny_config
    from mlx_pn.data.prepare import prepare_data

    cfg0, _ = tiny_run
    rows = {s: [{"text": f"{s} clause {i}: the licensee shall keep the notice {i} in every copy."} for i in range(n)]
            for s, n in (("train", 40), ("valid", 6), ("test", 5))}
    law = mlx_lm_folder(tmp_path / "law", rows)
    data_dir = tmp_path / "data"
    shutil.copytree(cfg0.data_dir, data_dir)  # the tiny tokenizer and shards: only the new domain is built
    cfg = tiny_config(tmp_path / "run", **{"data.dir": str(data_dir), "data.add_domains": f"law={law}"})
    assert list(cfg.data.domains) == ["drama", "legal", "medical", "law"]
    assert cfg.data.domains["law"] == str(law) and cfg.data.domains["legal"] == "bundled:legal"
    data = prepare_data(cfg, only=["law"])
    splits = data.corpora["law"].manifest["splits"]
    assert {s: v["documents"] for s, v in splits.items()} == {"train": 40, "valid": 6, "test": 5}
    assert "train.jsonl/valid.jsonl/test.jsonl as given" in data.corpora["law"].manifest["splits_from"]
    assert "(splits: " in capsys.readouterr().out
    replaced = tiny_config(tmp_path / "run2", **{"data.domains": f"law={law}"})
    assert list(replaced.data.domains) == ["law"]  # --data.domains replaces, as documented


def test_unknown_domain_error_lists_the_config_domains():
    from conftest import tiny_config
    from mlx_pn.config import ConfigError
    from mlx_pn.data.prepare import PreparedData
    from mlx_pn.methods.finetune import check_domain

    cfg = tiny_config("/nonexistent-never-written")
    only_generic = PreparedData(tokenizer=None, corpora={"generic": None})  # what prepare_data(only=[typo]) gives
    with pytest.raises(ConfigError, match=r"domain 'lgeal' is not in data.domains \(the config's domains: drama, "
                                          r"legal, medical\).*--data.add_domains lgeal=SOURCES"):
        check_domain(cfg, only_generic, "lgeal")


# --- fine-tuning budgets: early stopping, max_epochs, steps ---------------------------------------------------


def test_budget_takes_the_lower_cap():
    import numpy as np

    from mlx_pn.config import TrainConfig
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.state import budget

    b = PackedBatches(np.arange(64 * 40 + 1), 64, 8)  # 40 windows: 5 steps per epoch
    assert budget(TrainConfig(steps=0, max_epochs=2.0, batch_size=8, seq_len=64), b)[0].steps == 10
    assert budget(TrainConfig(steps=0, max_epochs=2.0, batch_size=8, seq_len=64), b)[1] == "max_epochs"
    assert budget(TrainConfig(steps=7, max_epochs=2.0, batch_size=8, seq_len=64), b)[0].steps == 7
    assert budget(TrainConfig(steps=7, max_epochs=2.0, batch_size=8, seq_len=64), b)[1] == "steps"
    assert budget(TrainConfig(steps=30, max_epochs=0.0, batch_size=8, seq_len=64), b)[1] == "steps"
    assert budget(TrainConfig(steps=0, max_epochs=0.5, batch_size=4, grad_accum=2, seq_len=64), b)[0].steps == 3


def test_finetune_budget_config_rules():
    from conftest import tiny_config
    from mlx_pn.config import Config, ConfigError

    assert (Config().finetune.steps, Config().finetune.max_epochs, Config().finetune.patience) == (0, 10.0, 3)
    with pytest.raises(ConfigError, match=r"finetune.steps=0 and finetune.max_epochs=0.0: set a budget"):
        tiny_config("/nonexistent-never-written", **{"finetune.steps": 0, "finetune.max_epochs": 0})
    with pytest.raises(ConfigError, match=r"pretrain.max_epochs: only fine-tuning is budgeted in epochs"):
        tiny_config("/nonexistent-never-written", **{"pretrain.max_epochs": 1})


def test_finetune_costs_count_steps_to_the_best_score():
    from mlx_pn.methods.finetune import finetune_costs
    from mlx_pn.models.transformer import ModelArgs

    args = ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=2, vocab_size=300)
    best, every = finetune_costs(args, {"tokens": 1000, "steps": 10, "best_step": 4, "wall_s": 5.0}, 50)
    assert (best.tokens, every.tokens, best.wall_s, every.wall_s) == (400, 1000, 2.0, 5.0)
    assert best.flops == pytest.approx(every.flops * 0.4)
    best, every = finetune_costs(args, {"tokens": 1000, "steps": 10, "best_step": None, "wall_s": 5.0}, 50)
    assert best == every


@pytest.mark.slow
def test_finetune_until_max_epochs_records_the_cap_and_progress(pretrained, capsys):
    import copy

    from mlx_pn.methods import specialize

    cfg0, data, _ = pretrained
    cfg = copy.deepcopy(cfg0)
    cfg.finetune.steps, cfg.finetune.max_epochs, cfg.finetune.patience = 0, 2.0, 0
    # the first 1536 legal tokens: 24 windows of 64, 3 steps of 8 per epoch
    r = specialize(cfg, data, "legal", resume=False, log=print, domain_tokens=1536)
    out = capsys.readouterr().out
    assert (r["stopped_by"], r["planned_steps"], r["finetune_steps"], r["max_epochs"]) == ("max_epochs", 6, 6, 2.0)
    per_step = cfg.finetune.batch_size * cfg.finetune.seq_len
    assert r["cost_all_steps"]["tokens"] == 6 * per_step
    assert r["cost_parts"]["finetune"]["tokens"] == r["best_step"] * per_step
    assert r["cost_parts_all_steps"]["finetune"]["tokens"] == 6 * per_step
    assert "stopped by max_epochs at step 6 of 6 planned (2.00 epochs)" in out
    for when in ("before", "after"):
        assert f"[evaluate] test splits of generic and legal {when} fine-tuning" in out
    assert out.count("[evaluate] generic.test: ppl") == 2 and out.count("[evaluate] legal.test: ppl") == 2


def test_clustering_shows_embedding_and_kmeans_progress(tiny_run, tmp_path, capsys, monkeypatch):
    import numpy as np

    import mlx_pn.clustering.embed as embed
    from mlx_pn.clustering.stage import run_clustering

    class Fake:  # the stage's progress, not the embedder's speed, is under test: unit vectors from the text
        def embed(self, texts, batch_size=64):
            v = np.stack([np.random.default_rng(len(t)).standard_normal(384) for t in texts]).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(embed, "get_embedder", lambda name: Fake())
    cfg, data = tiny_run
    lines = []
    run_clustering(cfg.cluster, cfg.pretrain.seq_len, tmp_path / "clusters", data, ks=[3], log=lines.append)
    err = capsys.readouterr().err  # the tqdm bars
    assert "embed generic.train" in err and "k-means k=3" in err
    assert "k-means k=3: k-means++ start" in err and "assign k=3" in err  # no silent minute at k = 1024
    assert any(ln.startswith("[cluster] k-means k=3 on ") for ln in lines)


def test_readme_line_for_own_data_works_as_written():
    import re

    from conftest import REPO, tiny_config

    text = (REPO / "README.md").read_text()
    flag = re.search(r'`--data\.add_domains "([^"]+)"` adds a domain to the preset\'s', text)
    assert flag and "`train.jsonl` / `valid.jsonl` / `test.jsonl`" in text and "`finetune.max_epochs`" in text
    cfg = tiny_config("/nonexistent-never-written", **{"data.add_domains": flag.group(1)})
    assert list(cfg.data.domains) == ["drama", "legal", "medical", flag.group(1).split("=")[0]]
