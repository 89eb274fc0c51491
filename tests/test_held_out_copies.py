"""Evaluation counts each exact-duplicate group once: the valid and test shards hold the first copy of each group
(train keeps every copy), and the shard manifest's `duplicates` says how many copies each held-out split left out."""

import random

from conftest import tiny_config
from mlx_pn.data import dedup
from mlx_pn.data.splitting import StreamedCorpus

WORDS = [f"w{i}" for i in range(300)]


def _copies(folder):
    """60 documents of random words, with 1, 2 or 3 copies each (a copy differs in case and punctuation only)."""
    rng = random.Random(3)
    folder.mkdir()
    n = 0
    for i in range(60):
        text = " ".join(rng.choice(WORDS) for _ in range(60))
        for c in range(1 + i % 3):
            (folder / f"d{n:03d}.txt").write_text(text if c == 0 else text.upper().replace(" ", ", "))
            n += 1


def test_held_out_shards_hold_one_copy_per_exact_duplicate_group(tiny_run, tmp_path):
    _, data = tiny_run
    folder = tmp_path / "dom"
    _copies(folder)
    cfg = tiny_config(tmp_path / "run", **{"data.valid_fraction": 0.2, "data.test_fraction": 0.2,
                                            "data.max_docs": 0})
    corpus = StreamedCorpus("dom", str(folder), "data.domains.dom", cfg, "fp", log=lambda *a: None)
    leaks = corpus.leak_report()
    m = corpus.write(data.tokenizer, tmp_path / "shards", extra={"duplicates": leaks})
    for split in ("valid", "test"):
        texts = list(corpus.texts(split))  # the split as made: every copy of its groups
        first = {}
        for t in texts:
            first.setdefault(dedup.exact_key(t), t)
        assert len(first) < len(texts), split  # the split held copies
        assert m["splits"][split]["documents"] == len(first)
        assert m["splits"][split]["tokens"] == sum(len(data.tokenizer.encode(t)) + 1 for t in first.values())
        assert m["duplicates"]["copies_left_out"][split] == len(texts) - len(first)
    assert m["splits"]["train"]["documents"] == len(list(corpus.texts("train")))  # train keeps every copy
    assert corpus.held_out_copies() == sum(m["duplicates"]["copies_left_out"].values())


def test_shards_made_before_the_rule_are_rebuilt_only_when_they_held_copies(tmp_path):
    import json

    from mlx_pn.data.prepare import prepare_data

    _copies(tmp_path / "dom")
    cfg = tiny_config(tmp_path / "run", **{"data.valid_fraction": 0.2, "data.test_fraction": 0.2})
    cfg.data.domains = {"dom": str(tmp_path / "dom")}
    lines = []
    prepare_data(cfg, log=lines.append)
    assert any("exact copies left out of the held-out shards" in x for x in lines)
    for name in ("generic", "dom"):  # as the version before the rule wrote them
        path = cfg.data_dir / "shards" / name / "manifest.json"
        m = json.loads(path.read_text())
        del m["duplicates"]["copies_left_out"]
        path.write_text(json.dumps(m))
    lines = []
    prepare_data(cfg, log=lines.append)
    assert any(x.startswith("[data] dom: train") for x in lines)  # it held copies: rebuilt
    assert not any(x.startswith("[data] generic: train") for x in lines)  # the bundled text has none: kept
    m = json.loads((cfg.data_dir / "shards" / "dom" / "manifest.json").read_text())
    assert sum(m["duplicates"]["copies_left_out"].values()) > 0
