"""The clustering stage on the tiny real-text run: every training window gets a label."""

import dataclasses
import json

import numpy as np
import pytest

from mlx_pn.clustering.stage import clustering_folder, clusters_root, load_clustering, run_clustering, window_len


def _stage(cfg):
    """The stage's inputs from a whole Config: its section, the window length, DATA/clusters."""
    return cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir)


def test_every_window_labelled_and_histograms_sum_to_one(tiny_run):
    cfg, data = tiny_run
    res = run_clustering(*_stage(cfg), data, ks=[4, 2048], log=lambda *a: None)
    c = load_clustering(*_stage(cfg), 4)
    L = window_len(cfg.cluster, cfg.pretrain.seq_len)
    for corpus in data.corpora:
        labels = c.labels(corpus, "train")
        assert len(labels) == len(data.corpora[corpus].tokens("train")) // L
        assert labels.min() >= 0 and labels.max() < 4
        assert abs(sum(c.histograms[corpus]) - 1) < 1e-9
    # the domains are different text: their histograms differ from the generic one
    tv = 0.5 * np.abs(np.array(c.histograms["legal"]) - np.array(c.histograms["generic"])).sum()
    assert tv > 0.1
    assert res[2048]["key"]["k"] < 2048  # lowered for this small corpus, and said so in the manifest
    report = (c.folder / "report.md").read_text()
    assert "Importance resampling" in report and "| legal |" in report
    m = json.loads((c.folder / "manifest.json").read_text())
    assert m["heldout_domain_nmi_k_domains"] > 0.5


def test_rerun_reuses_results(tiny_run, monkeypatch):
    import mlx_pn.clustering.stage as stage

    cfg, data = tiny_run
    run_clustering(*_stage(cfg), data, ks=[4], log=lambda *a: None)

    def no_work(*a, **k):
        raise AssertionError("a finished clustering was computed again")

    monkeypatch.setattr(stage, "kmeans", no_work)
    monkeypatch.setattr(stage, "assign", no_work)
    msgs = []
    run_clustering(*_stage(cfg), data, ks=[4], log=msgs.append)
    assert any("already done" in m for m in msgs)


def test_folder_names_on_disk(tiny_run):
    """The names other runs' DATA/clusters folders already carry: EMBEDDER-wL-kK (the k asked) and emb-EMBEDDER-wL."""
    cfg, data = tiny_run
    cluster, window, root = _stage(cfg)
    assert root == cfg.data_dir / "clusters"
    assert window == cfg.pretrain.seq_len  # cluster.window = 0: the training window
    assert window_len(dataclasses.replace(cluster, window=32), cfg.pretrain.seq_len) == 32
    run_clustering(cluster, window, root, data, ks=[4], log=lambda *a: None)
    assert clustering_folder(cluster, window, root, 4) == root / f"{cluster.embedder}-w{window}-k4"
    assert (root / f"{cluster.embedder}-w{window}-k4" / "manifest.json").exists()
    assert (root / f"emb-{cluster.embedder}-w{window}" / "generic.train.npy").exists()
    with pytest.raises(FileNotFoundError, match="has no clustering; run `mlx-pn cluster`"):
        load_clustering(cluster, window, root, 5)
