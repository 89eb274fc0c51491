"""The streamed data stage (mlx_pn.data.splitting / index) gives the in-memory path's splits, duplicate groups and
leak report exactly, on a corpus full of duplicates: exact copies, near copies, boilerplate buckets, and domain
documents copied from the generic text."""

import random

import numpy as np
import pytest

from conftest import tiny_config
from mlx_pn.data import dedup
from mlx_pn.data.index import DiskNearIndex, build_index, group
from mlx_pn.data.sources import load_documents, split_documents
from mlx_pn.data.splitting import StreamedCorpus

WORDS = [f"w{i}" for i in range(400)]


def _doc(rng, n=80):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _near(rng, text, changes=1):
    w = text.split()
    for _ in range(changes):
        w[rng.randrange(len(w))] = rng.choice(WORDS)
    return " ".join(w)


def make_corpus(folder, seed=0, n=240):
    """n random documents, plus exact copies (other case and punctuation), near copies (1-2 words changed) and
    a boilerplate family of 20 documents that differ in a few words (LSH buckets over 11 members)."""
    rng = random.Random(seed)
    folder.mkdir()
    texts = [_doc(rng) for _ in range(n)]
    texts += [t.upper().replace(" ", ",  ") for t in texts[:15]]
    texts += [_near(rng, t, rng.choice([1, 2])) for t in texts[15:45]]
    base = _doc(rng, 200)
    texts += [_near(rng, base, 3) for _ in range(20)]
    rng.shuffle(texts)
    for i, t in enumerate(texts):
        (folder / f"d{i:04d}.txt").write_text(t)
    return texts


@pytest.mark.parametrize("fractions", [(0.1, 0.1), (0.3, 0.2)])
def test_streamed_splits_and_groups_equal_the_in_memory_ones(tmp_path, fractions):
    make_corpus(tmp_path / "gen")
    v, t = fractions
    cfg = tiny_config(tmp_path / "run", **{"data.valid_fraction": v, "data.test_fraction": t, "data.max_docs": 0})
    docs = load_documents(str(tmp_path / "gen"))
    rep = {}
    splits = split_documents(docs, v, t, report=rep)
    assert rep["grouped_documents"] > 60 and rep["near_duplicates"] >= 15  # the corpus exercises the grouping

    streamed = StreamedCorpus("generic", str(tmp_path / "gen"), "data.generic", cfg, "fp", log=lambda *a: None)
    for s in ("train", "valid", "test"):
        assert list(streamed.texts(s)) == [d.text for d in splits[s]], s
    assert streamed.leak_report() == dedup.leak_report(splits)

    groups, ref = group(streamed.index), dedup.duplicate_groups([d.text for d in docs])
    assert np.array_equal(groups.root, ref.root) and groups.stats() == ref.stats()
    order = np.random.default_rng(1).permutation(len(docs))  # any order: positions, as the in-memory grouping
    shuffled, ref2 = group(streamed.index, order), dedup.duplicate_groups([docs[i].text for i in order])
    assert np.array_equal(shuffled.root, ref2.root) and shuffled.stats() == ref2.stats()


def test_the_disk_near_index_answers_as_the_in_memory_one(tmp_path):
    texts = make_corpus(tmp_path / "gen", seed=3)
    index = build_index(load_documents(str(tmp_path / "gen")), tmp_path / "idx")
    members = np.arange(0, len(texts), 2)  # every other document, as a train split would be
    disk = DiskNearIndex(index, members)
    mem = dedup.NearIndex([texts[i] for i in members])
    rng = random.Random(5)
    queries = [texts[i] for i in range(0, 60)] + [_near(rng, texts[i], 2) for i in range(60, 120)] + \
              [_doc(rng) for _ in range(40)] + [texts[i].lower() + "!" for i in range(120, 140)]
    answers = [disk.contains(q) for q in queries]
    assert answers == [mem.contains(q) for q in queries]
    assert 40 < sum(answers) < len(queries)  # both kinds of answer are tested


def test_a_tiny_corpus_fills_its_held_out_splits_as_before(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    rng = random.Random(0)
    for i in range(6):
        (folder / f"{i}.txt").write_text(_doc(rng))
    cfg = tiny_config(tmp_path / "run", **{"data.max_docs": 0})
    splits = split_documents(load_documents(str(folder)), 0.05, 0.05)
    streamed = StreamedCorpus("few", str(folder), "data.domains.few", cfg, "fp", log=lambda *a: None)
    for s in ("train", "valid", "test"):
        assert list(streamed.texts(s)) == [d.text for d in splits[s]]
    assert len(splits["valid"]) == len(splits["test"]) == 1


def test_a_source_that_changes_between_passes_is_an_error(tmp_path):
    make_corpus(tmp_path / "gen", n=60)
    cfg = tiny_config(tmp_path / "run", **{"data.max_docs": 0})
    streamed = StreamedCorpus("generic", str(tmp_path / "gen"), "data.generic", cfg, "fp", log=lambda *a: None)
    (tmp_path / "gen" / "d0003.txt").write_text("a different document now")
    from mlx_pn.data.sources import DataError

    with pytest.raises(DataError, match="changed while it was being read"):
        list(streamed.texts("train"))


@pytest.mark.slow  # spawns two worker processes
def test_the_index_is_the_same_for_one_and_two_workers(tmp_path):
    """data.workers: worker processes index the text; the files are byte for byte those of one process."""
    make_corpus(tmp_path / "gen", seed=7, n=400)
    docs = load_documents(str(tmp_path / "gen"))
    build_index(docs, tmp_path / "one", workers=1)
    build_index(docs, tmp_path / "two", workers=2)
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) and "shingles.bin" in files
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_second_near_index_replaces_the_band_files_instead_of_overwriting_them(tmp_path):
    """Two launches on one run build the generic reference at once: writing the band files in place truncated them
    under the other process's memory map (it died of SIGBUS in the concurrent kill test). They are replaced by a
    rename, so a map keeps the old file whole."""
    import os

    texts = make_corpus(tmp_path / "gen", seed=4, n=80)
    index = build_index(load_documents(str(tmp_path / "gen")), tmp_path / "idx")
    first = DiskNearIndex(index, np.arange(len(texts)))
    path = tmp_path / "idx" / "near-band00-keys.npy"
    inode = os.stat(path).st_ino
    DiskNearIndex(index, np.arange(len(texts)))
    assert os.stat(path).st_ino != inode
    assert first.contains(texts[3]) and not list((tmp_path / "idx").glob(".*.tmp"))


def test_a_small_source_is_indexed_in_this_process(tmp_path):
    """Spawning a worker costs about a second: below SMALL_SOURCE bytes of files one process does the index
    (data.workers, when set, is obeyed)."""
    from mlx_pn.data.splitting import _workers

    make_corpus(tmp_path / "gen", n=20)
    cfg = tiny_config(tmp_path / "run")
    assert _workers(str(tmp_path / "gen"), cfg) == 1
    cfg.data.workers = 3
    assert _workers(str(tmp_path / "gen"), cfg) == 3
