import gzip
import json

import numpy as np
import pytest

from mlx_pn.data.batches import PackedBatches, eval_windows
from mlx_pn.data.shards import Corpus
from mlx_pn.data.sources import DataError, Document, bundled_names, load_documents, split_documents
from mlx_pn.data.tokenizer import Tokenizer, train_tokenizer


def test_bundled_corpora_are_real_and_present():
    assert {"generic", "drama", "legal", "medical"} <= set(bundled_names())
    docs = load_documents("bundled:drama", max_docs=50)
    assert len(docs) == 50 and all(d.text == d.text.strip() and d.text for d in docs)


def test_missing_file_names_field_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"data.domains.x: '.*nope.txt' does not exist; fix the path"):
        load_documents(str(tmp_path / "nope.txt"), "data.domains.x")


def test_unknown_bundled_name_lists_available():
    with pytest.raises(DataError, match="available: drama"):
        load_documents("bundled:poetry")


def test_non_utf8_names_file_and_fix(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt: not valid UTF-8 .*iconv"):
        load_documents(str(f))


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("   \n\n")
    with pytest.raises(DataError, match="no non-empty documents"):
        load_documents(str(tmp_path), "data.generic")


def test_bad_jsonl_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: expected an object with a string field 'text'"):
        load_documents(str(f))


def test_folder_and_jsonl_gz_sources(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.md").write_text("first")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "x", "text": " third "}) + "\n")
    docs = load_documents(str(tmp_path))
    assert [d.text for d in docs] == ["first", "second", "third"]


def test_split_is_deterministic_and_disjoint():
    docs = [Document(f"d{i}", f"text {i}") for i in range(500)]
    a, b = split_documents(docs, 0.1, 0.1), split_documents(list(reversed(docs)), 0.1, 0.1)
    assert {s: {d.id for d in v} for s, v in a.items()} == {s: {d.id for d in v} for s, v in b.items()}
    ids = [d.id for v in a.values() for d in v]
    assert len(ids) == len(set(ids)) == 500 and 20 < len(a["valid"]) < 90


def test_sentencepiece_ids_equal_exported_tokenizer_json(tiny_run):
    """Real text from every corpus: spm ids == the HF tokenizer.json ids mlx-lm will use."""
    from transformers import AutoTokenizer

    cfg, data = tiny_run
    hf = AutoTokenizer.from_pretrained(str(data.tokenizer.hf_dir))
    n = 0
    for name in ("generic", "drama", "legal", "medical"):
        for d in load_documents(f"bundled:{name}", max_docs=25):
            text = d.text[:2000].strip()  # documents are stored stripped: spm's dummy prefix == Metaspace "first"
            assert data.tokenizer.encode(text) == hf.encode(text, add_special_tokens=False), d.id
            n += 1
    assert n == 100
    assert hf.decode(hf.encode("To be, or not\nto be", add_special_tokens=False)) == "To be, or not\nto be"


def test_shards_match_manifest_and_tokenizer(tiny_run):
    cfg, data = tiny_run
    c = data.corpora["legal"]
    m = c.manifest
    toks = c.tokens("train")
    assert len(toks) == m["splits"]["train"]["tokens"] and toks.max() < data.tokenizer.vocab_size
    assert (toks == data.tokenizer.eos_id).sum() == m["splits"]["train"]["documents"]
    Corpus(c.folder, data.tokenizer, verify_hashes=True)


def test_tokenizer_mismatch_is_detected(tiny_run, tmp_path):
    cfg, data = tiny_run
    other = train_tokenizer((d.text for d in load_documents("bundled:medical", max_docs=100)), 600, tmp_path / "tok")
    with pytest.raises(DataError, match="different tokenizer"):
        Corpus(data.corpora["legal"].folder, other)


def test_truncated_shard_is_detected(tiny_run, tmp_path):
    import shutil

    cfg, data = tiny_run
    copy = tmp_path / "legal"
    shutil.copytree(data.corpora["legal"].folder, copy)
    with open(copy / "train.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="truncated"):
        Corpus(copy)


def test_packed_batches_deterministic_and_cover_epoch():
    tokens = np.arange(1001, dtype=np.uint16)
    b = PackedBatches(tokens, seq_len=10, batch_size=4, seed=3)
    assert b.n_windows == 100
    np.testing.assert_array_equal(b.batch(7), PackedBatches(tokens, 10, 4, seed=3).batch(7))
    first_epoch = np.concatenate([b.batch(i)[0, :, 0] for i in range(25)])
    assert sorted(first_epoch.tolist()) == list(range(0, 1000, 10))  # every window exactly once
    x = b.batch(0)[0]
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)  # contiguous windows, target = next token
    assert not np.array_equal(b.batch(0), PackedBatches(tokens, 10, 4, seed=4).batch(0))


def test_domain_smaller_than_one_batch_is_clear():
    with pytest.raises(DataError, match="fewer than one batch of 16; add data or lower batch_size"):
        PackedBatches(np.zeros(300, np.uint16), seq_len=64, batch_size=16, name="data.domains.x")


def test_eval_windows_shapes():
    assert eval_windows(np.arange(105), 10).shape == (10, 11)
    assert eval_windows(np.arange(5), 10).shape == (1, 5)
    assert eval_windows(np.arange(105), 10, max_windows=3).shape == (3, 11)


def test_vocab_too_large_for_text(tmp_path):
    with pytest.raises(DataError, match="vocab_size=5000 is too large"):
        train_tokenizer(["a tiny text"] * 3, 5000, tmp_path / "t")


def test_tokenizer_folder_missing(tmp_path):
    with pytest.raises(DataError, match="spm.model is missing"):
        Tokenizer(tmp_path)


def test_changed_text_rebuilds_shards_and_guards_tokenizer(tmp_path):
    from conftest import tiny_config

    from mlx_pn.data.prepare import prepare_data

    gen, dom = tmp_path / "gen", tmp_path / "dom"
    gen.mkdir(), dom.mkdir()
    for i, d in enumerate(load_documents("bundled:generic", max_docs=60)):
        (gen / f"{i:03d}.txt").write_text(d.text)
    (dom / "a.txt").write_text(" ".join(d.text for d in load_documents("bundled:legal", max_docs=30)))
    cfg = tiny_config(tmp_path / "run", **{"data.generic": gen, "data.domains": f"law={dom}", "data.vocab_size": 400})
    quiet = dict(log=lambda *a: None)
    first = prepare_data(cfg, **quiet).corpora["law"].manifest
    assert prepare_data(cfg, **quiet).corpora["law"].manifest == first  # cached
    (dom / "b.txt").write_text("A new licence text. " * 50)
    rebuilt = prepare_data(cfg, **quiet).corpora["law"].manifest
    assert rebuilt["fingerprint"] != first["fingerprint"]
    assert sum(s["documents"] for s in rebuilt["splits"].values()) == 2
    (gen / "000.txt").write_text("changed generic text")
    with pytest.raises(DataError, match="trained on other generic text"):
        prepare_data(cfg, **quiet)


def test_parquet_source_streams_without_writing_anywhere(tmp_path, monkeypatch):
    """Read straight from the file (pyarrow), in order, ids kept: nothing cached under HOME (datasets'
    load_dataset wrote a copy into ~/.cache/huggingface/datasets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    texts = [f"document number {i} of a parquet corpus" for i in range(2500)]  # several record batches
    pq.write_table(pa.table({"text": texts}), tmp_path / "many.parquet", row_group_size=700)
    docs = load_documents(str(tmp_path / "many.parquet"))
    assert [d.text for d in docs] == texts and docs[1234].id == "many.parquet:1234"
    assert list(home.rglob("*")) == []


@pytest.mark.parametrize("column, message", [
    (["good", None], r"null.parquet: row 1 has no text \(null in column 'text'\)"),
    ([1, 2], r"null.parquet: column 'text' holds int64, not strings"),
])
def test_parquet_text_that_is_not_text_is_a_clear_error(tmp_path, column, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": column}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match=message):
        load_documents(str(tmp_path / "null.parquet"))


def test_a_file_that_is_not_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "fake.parquet").write_text("just some text, not parquet")
    with pytest.raises(DataError, match=r"fake.parquet: not a readable parquet file"):
        load_documents(str(tmp_path / "fake.parquet"))


def test_parquet_source_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["  first doc ", "second doc", ""], "id": ["a", "b", "c"]}), tmp_path / "d.parquet")
    docs = load_documents(str(tmp_path / "d.parquet"))
    assert [(d.id, d.text) for d in docs] == [("a", "first doc"), ("b", "second doc")]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="no 'text' column"):
        load_documents(str(tmp_path / "bad.parquet"))


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "dev-zero"])
def test_a_source_that_never_ends_is_a_clear_error(tmp_path, kind):
    """A FIFO blocked forever in open(); /dev/zero (or a link to it) looped forever in the fingerprint."""
    import os

    from mlx_pn.data.sources import fingerprint

    path = tmp_path / "src.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path = "/dev/zero"
    want = "a named pipe" if kind == "fifo" else "a device"
    with pytest.raises(DataError, match=rf"data.domains.z: \S*(src.txt|/dev/zero).* is {want}"):
        fingerprint(str(path), field="data.domains.z")
    with pytest.raises(DataError, match=rf"is {want}.*; point it at a text"):
        load_documents(str(path), "data.domains.z")


def test_utf16_text_gets_utf16_advice(tmp_path):
    f = tmp_path / "wide.txt"
    f.write_bytes("a short text in UTF-16".encode("utf-16"))
    with pytest.raises(DataError, match=r"wide.txt: UTF-16 text .*iconv -f utf-16 -t utf-8"):
        load_documents(str(f))
    (tmp_path / "wide.txt").write_bytes("no byte-order mark".encode("utf-16-le"))
    with pytest.raises(DataError, match="UTF-16 text"):
        load_documents(str(f))
