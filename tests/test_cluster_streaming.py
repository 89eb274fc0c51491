"""The cluster stage streams: labels assigned block by block equal assign() on everything, resampling reads labels
chunk by chunk with the same draws, a killed embedding resumes at its last part, and leftover parts are swept."""

import json

import numpy as np
import pytest

import mlx_pn.clustering.sampling as sampling
import mlx_pn.clustering.stage as stage
from mlx_pn.clustering.kmeans import assign
from mlx_pn.clustering.sampling import resample, resample_stats
from mlx_pn.clustering.stage import clustering_folder, npy_rows, run_clustering, window_len
from mlx_pn.data.prepare import PreparedData


def _unit_rows(n, d=24, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_npy_written_and_read_in_blocks_round_trips(tmp_path):
    x = _unit_rows(1000)
    path = tmp_path / "x.npy"
    stage._write_npy_chunks(path, x.shape, np.float32, (x[s:s + 300] for s in range(0, 1000, 300)))
    assert np.array_equal(np.load(path), x)
    blocks = list(npy_rows(path, 256))
    assert [len(b) for b in blocks] == [256, 256, 256, 232]
    assert np.array_equal(np.concatenate(blocks), x)
    idx = np.array([0, 255, 256, 700, 999])
    assert np.array_equal(stage._rows_at(path, idx, chunk=256), x[idx])


@pytest.mark.parametrize("k", [16, 1024])
def test_streamed_assignment_equals_in_memory(tmp_path, k):
    # 10,000 rows span three streamed blocks; assign() takes them in one chunk at k = 16, three at k = 1024
    x, c = _unit_rows(10_000, seed=1), _unit_rows(k, seed=2)
    src = tmp_path / "emb.npy"
    np.save(src, x)

    class Bar:
        n = 0

        def update(self, m):
            self.n += m

    bar = Bar()
    counts = stage._assign_split(src, tmp_path / "labels.npy", len(x), c, k, bar)
    want = assign(x, c)
    got = np.load(tmp_path / "labels.npy")
    assert got.dtype == np.int32 and np.array_equal(got, want)
    assert np.array_equal(counts, np.bincount(want, minlength=k)) and bar.n == len(x)


def _old_resample(labels, p, n, seed, replace):
    """The in-memory resampling this module replaced (argsort of every label), as the reference."""
    k = p.size
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if replace:
        c = rng.choice(k, size=n, p=p)
        j = np.minimum((rng.random(n) * counts[c]).astype(np.int64), counts[c] - 1)
        return order[starts[c] + j]
    quota = rng.multinomial(n, p)
    room = np.where(p > 0, counts, 0)
    while True:
        excess = int(np.maximum(quota - room, 0).sum())
        quota = np.minimum(quota, room)
        if excess == 0:
            break
        free = p * (quota < room)
        quota += rng.multinomial(excess, free / free.sum())
    picks = [order[starts[c] + rng.choice(counts[c], size=q, replace=False)] for c, q in enumerate(quota) if q]
    return rng.permutation(np.concatenate(picks))


@pytest.mark.parametrize("replace", [True, False])
def test_chunked_resampling_draws_what_the_in_memory_one_drew(tmp_path, monkeypatch, replace):
    k, n = 37, 5000
    labels = np.random.default_rng(3).integers(0, k, n).astype(np.int32)
    np.save(tmp_path / "labels.npy", labels)
    mm = np.load(tmp_path / "labels.npy", mmap_mode="r")  # as Clustering.labels gives them
    hist = np.random.default_rng(4).random(k)
    monkeypatch.setattr(sampling, "CHUNK", 512)  # ten chunks
    got = resample(mm, hist, n=3000, seed=7, replace=replace)
    want = _old_resample(labels.astype(np.int64), hist / hist.sum(), 3000, 7, replace)
    assert np.array_equal(got, want)
    s = resample_stats(got, mm, hist, k)
    ref = np.bincount(labels[got], minlength=k) / got.size
    assert s["tv_distance"] == pytest.approx(0.5 * np.abs(ref - hist / hist.sum()).sum())


def _quiet(*a, **k):
    pass


def test_killed_embedding_resumes_at_its_last_part_and_leftovers_are_swept(tiny_run, tmp_path, monkeypatch):
    from mlx_pn.clustering import embed

    cfg, data = tiny_run
    cluster, window = cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len)
    n = len(data.corpora["generic"].tokens("train")) // window
    assert n > stage.PART  # the generic train split spans two parts
    real = embed.get_embedder(cluster.embedder)
    calls = []

    class Dying:
        """Embeds the first part, then dies as a kill would."""

        def embed(self, texts, batch_size=32):
            if calls:
                raise KeyboardInterrupt
            calls.append(len(texts))
            return real.embed(texts, batch_size)

    monkeypatch.setattr(embed, "get_embedder", lambda name: Dying())
    root = tmp_path / "clusters"
    with pytest.raises(KeyboardInterrupt):
        run_clustering(cluster, window, root, data, ks=[4], log=_quiet)
    parts = root / f"emb-{cluster.embedder}-w{window}" / "generic.train.parts"
    assert (parts / "00000.npy").exists() and not (parts / "00001.npy").exists()

    class Counting:
        def embed(self, texts, batch_size=32):
            calls.append(len(texts))
            return real.embed(texts, batch_size)

    calls.clear()
    monkeypatch.setattr(embed, "get_embedder", lambda name: Counting())
    run_clustering(cluster, window, root, data, ks=[4], log=_quiet)
    assert calls[0] == n - stage.PART  # the generic train split resumed at its second part
    assert not parts.exists()
    resumed = np.load(clustering_folder(cluster, window, root, 4) / "labels" / "generic.train.npy")

    # a clean run gives the same labels
    clean = tmp_path / "clean"
    run_clustering(cluster, window, clean, data, ks=[4], log=_quiet)
    assert np.array_equal(resumed, np.load(clustering_folder(cluster, window, clean, 4) / "labels" /
                                           "generic.train.npy"))

    # a run killed after the final embeddings but before removing the parts (11 MB seen), and the parts of a
    # corpus no longer in the config: both removed by the next run, and said
    emb_dir = root / f"emb-{cluster.embedder}-w{window}"
    for stale in ("generic.train.parts", "gone.train.parts"):
        (emb_dir / stale).mkdir()
        np.save(emb_dir / stale / "00000.npy", np.zeros((3, 4), np.float32))
    msgs = []
    run_clustering(cluster, window, root, data, ks=[4], log=msgs.append)
    assert not (emb_dir / "generic.train.parts").exists() and not (emb_dir / "gone.train.parts").exists()
    assert sum("removed" in m and ".parts" in m for m in msgs) == 2


def test_a_single_domain_says_nmi_needs_two(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "REPORT_DRAWS", 1000)  # and the report's resampling draws stay bounded
    cfg, data = tiny_run
    one = PreparedData(data.tokenizer, {c: data.corpora[c] for c in ("generic", "legal")})
    cluster, window = cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len)
    res = run_clustering(cluster, window, tmp_path / "clusters", one, ks=[4], log=_quiet)
    assert res[4]["domain_nmi_at_k"] is None and res[4]["heldout_domain_nmi_k_domains"] is None
    assert res[4]["importance_resampling"]["legal"]["n"] == 1000 < res[4]["windows"]["generic.train"]
    report = (clustering_folder(cluster, window, tmp_path / "clusters", 4) / "report.md").read_text()
    assert "None" not in report and report.count("needs at least 2 domains (this run has 1)") == 2
    m = json.loads((clustering_folder(cluster, window, tmp_path / "clusters", 4) / "manifest.json").read_text())
    assert m["domain_nmi_at_k"] is None
