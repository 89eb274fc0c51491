"""Leak-free splits: exact and near-duplicate documents land in one split, the data manifest counts them,
and a domain's held-out documents that also sit in the generic train split are reported."""

import hashlib
import random

from mlx_pn.data.dedup import NearIndex, duplicate_groups, leak_report
from mlx_pn.data.sources import Document, split_documents


def _text(rng: random.Random, n: int = 120) -> str:
    vocab = [f"w{i}" for i in range(3000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def _near(rng: random.Random, text: str, changes: int = 2) -> str:
    """A copy with a few words replaced (2 of 120 words: word 5-gram Jaccard ~0.84, a near duplicate)."""
    w = text.split()
    for i in rng.sample(range(len(w)), changes):
        w[i] = f"x{rng.randrange(10**6)}"
    return " ".join(w)


def _hash_split(d: Document, v: float, t: float) -> str:  # the assignment every document had before grouping
    h = int.from_bytes(hashlib.sha1(f"{d.id}\0{d.text[:256]}".encode()).digest()[:8], "big") / 2**64
    return "valid" if h < v else "test" if h < v + t else "train"


def _corpus(seed=0):
    rng = random.Random(seed)
    base = [_text(rng) for _ in range(400)]
    docs = [Document(f"d{i}", t) for i, t in enumerate(base)]
    planted = {}
    for g in range(30):  # 30 groups: an exact copy (other case/spacing/punctuation) and a near copy of base[g]
        src = base[g]
        exact = "  " + src.upper().replace(" ", ",  ") + "!"
        docs += [Document(f"exact{g}", exact), Document(f"near{g}", _near(rng, src))]
        planted[g] = {f"d{g}", f"exact{g}", f"near{g}"}
    return docs, planted


def test_planted_duplicates_never_straddle_splits_and_are_counted():
    docs, planted = _corpus()
    rep = {}
    splits = split_documents(docs, 0.2, 0.2, report=rep)  # large held-out fractions: many groups would straddle
    where = {d.id: s for s, ds in splits.items() for d in ds}
    assert sorted(where) == sorted(d.id for d in docs)
    for ids in planted.values():
        assert len({where[i] for i in ids}) == 1, ids
    straddled_by_hash = sum(len({_hash_split(d, 0.2, 0.2) for d in docs if d.id in ids}) > 1
                            for ids in planted.values())
    assert straddled_by_hash >= 10  # without the grouping most planted groups would have leaked
    assert rep["groups"] == 30 and rep["grouped_documents"] == 90
    assert rep["exact_duplicates"] == 30 and rep["near_duplicates"] == 30
    # a document without duplicates keeps exactly the split it always had
    alone = [d for d in docs if not any(d.id in ids for ids in planted.values())]
    assert all(where[d.id] == _hash_split(d, 0.2, 0.2) for d in alone)
    assert rep["moved_by_grouping"] == sum(where[d.id] != _hash_split(d, 0.2, 0.2) for d in docs) > 0
    # order does not matter
    again = split_documents(list(reversed(docs)), 0.2, 0.2)
    assert {s: {d.id for d in v} for s, v in again.items()} == {s: {d.id for d in v} for s, v in splits.items()}
    assert leak_report(splits)["groups_across_splits"] == 0


def test_near_duplicate_threshold():
    rng = random.Random(1)
    a = _text(rng, 200)
    far = _near(rng, a, changes=40)  # 40 of 200 words changed: shingle Jaccard well under 0.8
    g = duplicate_groups([a, _near(rng, a, 2), far, _text(rng, 200)])
    assert g.root.tolist()[:2] == [0, 0] and g.root[2] == 2 and g.root[3] == 3


def test_leak_report_counts_straddling_groups_and_generic_overlap():
    rng = random.Random(2)
    generic = [_text(rng) for _ in range(200)]
    test = [Document("t0", generic[5]), Document("t1", _near(rng, generic[7])), Document("t2", _text(rng))]
    train = [Document(f"tr{i}", _text(rng)) for i in range(20)] + [Document("copy", test[2].text)]
    rep = leak_report({"train": train, "valid": [], "test": test}, NearIndex(generic))
    assert rep["groups_across_splits"] == 1 and rep["grouped_documents"] == 2  # given splits can leak: reported
    assert rep["in_generic_train"] == {"valid": 0, "test": 2}


def test_prepared_manifest_reports_duplicates(tmp_path):
    """The data stage writes the counts into each corpus's manifest: planted duplicates in a domain file, and
    copies of generic documents in it (those that land in its valid/test are the generic/domain overlap)."""
    import json

    from conftest import tiny_config
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.data.sources import load_documents

    cfg = tiny_config(tmp_path / "run", **{"data.valid_fraction": "0.2", "data.test_fraction": "0.3"})
    generic = split_documents(load_documents("bundled:generic", max_docs=cfg.data.max_docs), 0.2, 0.3)["train"]
    rng = random.Random(3)
    dom = tmp_path / "dom.jsonl"
    rows = [{"text": _text(rng)} for _ in range(60)]
    rows += [{"text": rows[0]["text"]}, {"text": _near(rng, rows[1]["text"], 2)}]
    rows += [{"text": generic[i].text} for i in range(10)]  # ten generic train documents copied into the domain
    dom.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.data.domains = {"dom": str(dom)}
    data = prepare_data(cfg, log=lambda *a: None)
    m = data.corpora["dom"].manifest["duplicates"]
    assert m["groups"] == 2 and m["grouped_documents"] == 4 and m["groups_across_splits"] == 0
    splits = split_documents(load_documents(str(dom)), 0.2, 0.3)
    copies = {d.text for d in generic[:10]}
    want = {s: sum(d.text in copies for d in splits[s]) for s in ("valid", "test")}
    assert m["in_generic_train"] == want and sum(want.values()) > 0
    assert data.corpora["generic"].manifest["duplicates"]["groups_across_splits"] == 0
    assert "in_generic_train" not in data.corpora["generic"].manifest["duplicates"]


def test_data_stage_logs_the_duplicates(tmp_path):
    from conftest import tiny_config
    from mlx_pn.data.prepare import prepare_data

    rng = random.Random(4)
    dom = tmp_path / "dom"
    dom.mkdir()
    texts = [_text(rng) for _ in range(30)]
    for i, t in enumerate(texts + [texts[0], texts[1].upper()]):
        (dom / f"{i:02d}.txt").write_text(t)
    cfg = tiny_config(tmp_path / "run")
    cfg.data.domains = {"dom": str(dom)}
    lines = []
    prepare_data(cfg, log=lines.append)
    said = [x for x in lines if x.startswith("[data] dom: 4 documents in 2 duplicate groups (2 exact, 0 near")]
    assert len(said) == 1 and "0 groups across splits" in said[0]


def test_a_moved_text_corpus_splits_the_same_way(tmp_path):
    """A .txt file is one document; its id (which, with its text, picks its split) is its path inside the folder
    the spec names, or its name: the same corpus in another place splits the same way (the id was the absolute
    path, so a one-document domain was short of its train or of its valid split depending on the temp folder)."""
    import shutil

    from mlx_pn.data.sources import read_source

    rng = random.Random(0)
    a = tmp_path / "a" / "corpus"
    (a / "sub").mkdir(parents=True)
    for i in range(60):
        (a / ("sub" if i % 2 else "") / f"doc{i}.txt").write_text(_text(rng))
    b = tmp_path / "elsewhere" / "deeper" / "corpus"
    shutil.copytree(a, b)

    def names(spec):
        docs = list(read_source(str(spec)))
        return {k: sorted(d.id for d in v) for k, v in split_documents(docs, 0.1, 0.1).items()}

    first = names(a)
    assert first == names(b) and len(first["valid"]) and len(first["test"])
    assert "sub/doc1.txt" in sum(first.values(), [])
    one = b / "sub" / "doc1.txt"
    assert [d.id for d in read_source(str(one))] == ["doc1.txt"]
