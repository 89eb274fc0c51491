"""How well do embeddings separate the domains? Held-out windows of every domain are embedded with
each embedder, clustered with k = number of domains, and scored by NMI and purity against the
domain labels (docs/data-sources.md reports NMI 0.95 for MiniLM on 800-character chunks of 7 domains).
scikit-learn's KMeans on the same vectors is the peer, when installed.

    python -m tools.bench_domain_nmi --config recipes/configs/offline-mix.yaml [--per-domain 60]
"""

from __future__ import annotations

import time

import numpy as np


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    return sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels)) / len(labels)


def extra(p):
    p.add_argument("--per-domain", type=int, default=60, help="held-out windows per domain (valid+test splits)")
    p.add_argument("--embedders", nargs="+", default=["static", "minilm"], help="embedders to compare")
    p.add_argument("--n-init", type=int, default=5, help="k-means restarts (both libraries)")


def main(argv=None):
    from mlx_pn.cli import build_parser, parse

    cfg, args = parse(build_parser(__doc__, extra=extra), argv)
    from mlx_pn.clustering.stage import window_len, window_texts
    from mlx_pn.clustering.kmeans import kmeans, nmi
    from mlx_pn.clustering.embed import get_embedder
    from mlx_pn.data.prepare import prepare_data

    data = prepare_data(cfg)
    L, rng = window_len(cfg.cluster, cfg.pretrain.seq_len), np.random.default_rng(0)
    texts, truth = [], []
    for i, d in enumerate(data.domain_names()):
        ws = []
        for split in ("valid", "test"):
            ws += window_texts(data.corpora[d].tokens(split), L, data.tokenizer)
        take = rng.choice(len(ws), min(args.per_domain, len(ws)), replace=False)
        texts += [ws[j] for j in sorted(take)]
        truth += [i] * len(take)
    truth = np.asarray(truth)
    k = len(data.domain_names())
    print(f"{len(texts)} held-out windows of {L} tokens from {k} domains; k-means with k={k}, n_init={args.n_init}")
    for name in args.embedders:
        t = time.perf_counter()
        x = get_embedder(name).embed(texts, batch_size=32)
        emb_s = time.perf_counter() - t
        labels = kmeans(x, k, seed=0, n_init=args.n_init, spherical=True).labels
        line = (f"{name:8s} embed {len(texts) / emb_s:8.1f} windows/s | mlx_pn k-means NMI {nmi(labels, truth):.3f} "
                f"purity {purity(labels, truth):.3f}")
        try:
            from sklearn.cluster import KMeans

            sk = KMeans(k, n_init=args.n_init, random_state=0).fit(x).labels_
            line += f" | sklearn KMeans NMI {nmi(sk, truth):.3f} purity {purity(sk, truth):.3f}"
        except ImportError:
            pass
        print(line, flush=True)


if __name__ == "__main__":
    main()
