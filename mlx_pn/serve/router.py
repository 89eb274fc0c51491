"""Route a text to the specialist of its domain by the run's clusters (c-BTM-style routing at inference).

The cluster stage already holds what routing needs: the embedder, the k-means centroids (K, D) and each
corpus's cluster histogram (K,) (generic included). A text is cut into windows of the clustering's L tokens
(the run's tokenizer), each window is embedded and assigned to its nearest centroid, and every corpus is
scored two ways:

    "hist":     log P(text's clusters | corpus) = sum_w log h_corpus[c_w]  (histograms smoothed by `alpha`)
    "centroid": cos(mean window embedding, corpus's mean train-window embedding) / `temperature`

Softmax over the corpora of either score gives the route's confidence. "generic" is one of the corpora: a
text that looks generic (or whose best domain is below `min_confidence`) goes to the generic model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERIC = "generic"  # mlx_pn.data.prepare.GENERIC; restated so serving needs no data-stage import at route time
RULES = ("hist", "centroid")


@dataclass
class Route:
    domain: str          # a domain name or "generic"
    score: float         # softmax confidence of the chosen corpus under the rule, in [0, 1]
    confident: bool      # score >= min_confidence and the best corpus is a domain
    best: str            # the best-scoring corpus before the confidence test
    rule: str

    def as_dict(self) -> dict:
        return {"domain": self.domain, "score": round(self.score, 4), "confident": self.confident,
                "best": self.best, "rule": self.rule}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class Router:
    """Scores a text against every corpus of a clustering. names: corpora ("generic" and the domains);
    centroids (K, D) unit rows; hists (C, K) P(cluster | corpus); means (C, D) unit mean train embeddings."""

    def __init__(self, embedder, tokenizer, window: int, names: list[str], centroids: np.ndarray,
                 hists: np.ndarray, means: np.ndarray, rule: str = "centroid", min_confidence: float = 0.5,
                 alpha: float = 0.5, temperature: float = 0.05):
        if rule not in RULES:
            raise ValueError(f"--route-rule {rule!r}: must be one of {', '.join(RULES)}")
        self.embedder, self.tokenizer, self.window = embedder, tokenizer, window
        self.names, self.centroids, self.means = list(names), centroids, means
        k = hists.shape[1]
        # add-alpha smoothing in counts of windows: a cluster a corpus never hit is unlikely, not impossible
        self.log_hists = np.log((hists + alpha / max(k, 1)) / (1.0 + alpha))  # (C, K)
        self.rule, self.min_confidence, self.temperature = rule, min_confidence, temperature

    def windows(self, text: str) -> list[str]:
        """The text cut into windows of `window` tokens of the run's tokenizer (a short text is one window)."""
        ids = self.tokenizer.encode(text)
        if not ids:
            return [text]
        return [self.tokenizer.decode(ids[i:i + self.window]) for i in range(0, len(ids), self.window)]

    def scores(self, text: str) -> dict[str, np.ndarray]:
        """{rule: (C,) softmax confidence per corpus} for both rules."""
        vecs = np.asarray(self.embedder.embed(self.windows(text)), np.float32)  # (W, D) unit rows
        clusters = np.argmax(vecs @ self.centroids.T, axis=1)  # (W,) nearest centroid (cosine)
        loglik = self.log_hists[:, clusters].sum(axis=1)  # (C,)
        mean = vecs.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return {"hist": _softmax(loglik), "centroid": _softmax(self.means @ mean / self.temperature)}

    def route(self, text: str, rule: str | None = None) -> Route:
        rule = rule or self.rule
        p = self.scores(text)[rule]
        i = int(np.argmax(p))
        best, score = self.names[i], float(p[i])
        confident = best != GENERIC and score >= self.min_confidence
        return Route(best if confident else GENERIC, score, confident, best, rule)


def _domain_means(emb_folder: Path, names: list[str], centroids: np.ndarray, hists: np.ndarray) -> np.ndarray:
    """(C, D) unit mean train-window embedding of each corpus, from the cluster stage's embeddings; a corpus
    whose embeddings file is gone falls back to its histogram-weighted mean of the centroids."""
    rows = []
    for name, h in zip(names, hists):
        f = emb_folder / f"{name}.train.npy"
        v = np.asarray(np.load(f, mmap_mode="r")).mean(axis=0) if f.exists() else h @ centroids
        rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
    return np.stack(rows).astype(np.float32)


def load_router(cfg, tokenizer, k: int | None = None, embedder=None, **kwargs) -> Router:
    """The Router of a run: cfg's clustering (cluster.k unless `k`) as the cluster stage wrote it under
    DATA/clusters. FileNotFoundError (naming the `cluster` command) when the run has not been clustered."""
    from mlx_pn.clustering.embed import get_embedder
    from mlx_pn.clustering.stage import clusters_root, load_clustering, window_len

    window, root = window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir)
    c = load_clustering(cfg.cluster, window, root, k or cfg.cluster.k)
    names = [GENERIC] + [d for d in cfg.data.domains if d in c.histograms]
    hists = np.array([c.histograms[n] for n in names], np.float64)  # (C, K)
    centroids = np.asarray(c.centroids, np.float32)
    means = _domain_means(root / f"emb-{cfg.cluster.embedder}-w{window}", names, centroids, hists)
    return Router(embedder or get_embedder(cfg.cluster.embedder), tokenizer, window, names, centroids, hists,
                  means, **kwargs)
