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
