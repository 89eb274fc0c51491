"""The clustering stage on the tiny real-text run: every training window gets a label."""

import json

import numpy as np

from mlx_pn.clustering.stage import load_clustering, run_clustering, window_len


def test_every_window_labelled_and_histograms_sum_to_one(tiny_run):
    cfg, data = tiny_run
    res = run_clustering(cfg, data, ks=[4, 2048], log=lambda *a: None)
    c = load_clustering(cfg, 4)
    L = window_len(cfg)
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


def test_rerun_reuses_results(tiny_run):
    cfg, data = tiny_run
    run_clustering(cfg, data, ks=[4], log=lambda *a: None)
    msgs = []
    run_clustering(cfg, data, ks=[4], log=msgs.append)
    assert any("already done" in m for m in msgs)
