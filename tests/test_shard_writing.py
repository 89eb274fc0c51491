"""build_shards writes one array per batch of documents: the bytes equal every document's ids + [eos] written
one by one (the format the cluster stage and the batches read), and its progress counts bytes and tokens."""

import numpy as np

from mlx_pn.data.shards import Corpus, build_shards
from mlx_pn.data.sources import Document, load_documents
from mlx_pn.data.tokenizer import train_tokenizer


def test_batched_shard_bytes_equal_per_document_ids_and_eos(tmp_path, capsys, monkeypatch):
    import functools

    from tqdm import tqdm

    from mlx_pn.data import shards

    monkeypatch.setattr(shards, "tqdm", functools.partial(tqdm, mininterval=0))  # every update drawn
    docs = load_documents("bundled:generic", max_docs=40)
    tok = train_tokenizer((d.text for d in docs), 600, tmp_path / "tok")
    splits = {"train": docs[:23], "valid": docs[23:30] + [Document("u", "naïve café ✓")], "test": []}
    m = build_shards("g", splits, tok, tmp_path / "shards", "bundled:generic", batch_docs=4)  # 23 = 5 batches + 3
    corpus = Corpus(tmp_path / "shards" / "g", tok, verify_hashes=True)
    for split, part in splits.items():
        want = b"".join(np.asarray(tok.encode(d.text) + [tok.eos_id], dtype=np.uint16).tobytes() for d in part)
        assert (tmp_path / "shards" / "g" / f"{split}.bin").read_bytes() == want, split
        assert m["splits"][split]["tokens"] == len(want) // 2 == len(corpus.tokens(split))
        assert m["splits"][split]["bytes_utf8"] == sum(len(d.text.encode()) for d in part)
        assert m["splits"][split]["documents"] == len(part)
    err = capsys.readouterr().err
    total = sum(m["splits"][s]["tokens"] for s in splits)
    assert f"{total:,} tokens" in err, err[-300:]  # bytes and tokens, not documents
    assert "B/s" in err and "doc/s" not in err
