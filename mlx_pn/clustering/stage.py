"""The clustering stage: embed every token window, fit k-means on generic windows, label all windows.

Windows are the training windows of :class:`mlx_pn.data.batches.PackedBatches` (window ``w`` of a
split covers tokens ``[w*L, (w+1)*L)``), so every training window of every corpus gets a cluster id:
what slm-mix/slm-pn route by and what slm-is resamples. The result for one k is a :class:`Clustering`,
made by :func:`run_clustering` and read back by :func:`load_clustering`. The stage takes its own config
section (``cluster``), the window length L (:func:`window_len`) and its root folder DATA/clusters
(:func:`clusters_root`), never the whole Config. Files, all resumable:

    DATA/clusters/emb-EMBEDDER-wL/CORPUS.SPLIT.npy       (N, D) float32 unit vectors (+ .json)
    DATA/clusters/EMBEDDER-wL-kK/centroids.npy           (K, D) float32
    DATA/clusters/EMBEDDER-wL-kK/labels/CORPUS.SPLIT.npy (N,) int32
    DATA/clusters/EMBEDDER-wL-kK/histograms.json, report.md, manifest.json

Notation: N windows of a split, L tokens per window, D = 384 embedding size, K clusters (k used; k_req
is the k asked for, which names the folder), F generic windows the k-means is fitted on.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlx_pn.commands import recipe_command
from mlx_pn.config import ClusterConfig, ConfigError
from mlx_pn.clustering.kmeans import MIN_WINDOWS_PER_CLUSTER, assign, cluster_report, histogram, kmeans, nmi
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.clustering.sampling import resample, resample_stats
from mlx_pn.io import atomic_file, remove_tree, write_json_atomic, write_text_atomic

PART = 4096  # windows per resumable embedding part


def window_len(cluster: ClusterConfig, seq_len: int) -> int:
    """Tokens per clustered window L: cluster.window, or the training window (pretrain.seq_len) when it is 0."""
    return cluster.window or seq_len


def clusters_root(data_dir: Path) -> Path:
    """DATA/clusters: the stage's root folder (embeddings and every clustering below it)."""
    return Path(data_dir) / "clusters"


def window_texts(tokens: np.ndarray, window: int, tok, start: int = 0, stop: int | None = None) -> list[str]:
    """Decoded text of windows ``start..stop`` of ``tokens`` (T,) -> stop - start strings; a partial tail is dropped."""
    n = len(tokens) // window
    stop = n if stop is None else min(stop, n)
    return [tok.decode(tokens[w * window:(w + 1) * window]) for w in range(start, stop)]


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    atomic_file(path, lambda f: np.save(f, arr))


def embed_split(data: PreparedData, corpus: str, split: str, embedder, name: str, window: int, folder: Path,
                batch_size: int = 64, log=print) -> np.ndarray:
    """(N_windows, D) embeddings of one split, cached; an interrupted run resumes at the last part."""
    c = data.corpora[corpus]
    final, meta_path = folder / f"{corpus}.{split}.npy", folder / f"{corpus}.{split}.json"
    meta = {"shard_sha256": c.manifest["splits"][split]["sha256"], "embedder": name, "window": window}
    if final.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return np.load(final, mmap_mode="r")
    tokens = c.tokens(split)  # (T,) token ids
    n = len(tokens) // window  # N windows; the partial tail is not a training window either
    if n == 0:
        return np.zeros((0, 384), np.float32)
    parts = folder / f"{corpus}.{split}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    if (parts / "meta.json").exists() and json.loads((parts / "meta.json").read_text()) != meta:
        remove_tree(parts)  # renamed away first: a kill mid-deletion must not leave old parts to be reused
        parts.mkdir()
    write_json_atomic(parts / "meta.json", meta)
    bar = tqdm(total=n, desc=f"embed {corpus}.{split}", unit="win", leave=False)
    out = []
    for i, start in enumerate(range(0, n, PART)):
        part = parts / f"{i:05d}.npy"
        if not part.exists():
            vecs = embedder.embed(window_texts(tokens, window, data.tokenizer, start, start + PART), batch_size)
            _save_npy_atomic(part, np.asarray(vecs, np.float32))  # (<= PART, D)
        out.append(np.load(part))
        bar.update(len(out[-1]))
    bar.close()
    emb = np.concatenate(out)  # (N, D)
    _save_npy_atomic(final, emb)
    write_json_atomic(meta_path, meta)
    remove_tree(parts)
    return emb


@dataclass
class Clustering:
    """One finished clustering on disk: centroids (K, D) float32, histograms {corpus: (K,) P(cluster) of its
    train windows}, and per split the labels (N,) int32 of every window."""

    folder: Path
    k: int
    centroids: np.ndarray
    histograms: dict[str, list[float]]

    def labels(self, corpus: str, split: str = "train") -> np.ndarray:
        """(N,) int32 cluster id of every window of the split."""
        return np.load(self.folder / "labels" / f"{corpus}.{split}.npy")


def clustering_folder(cluster: ClusterConfig, window: int, root: Path, k: int) -> Path:
    """ROOT/EMBEDDER-wL-kK: named by the k asked for (the k used may be lower; see the manifest)."""
    return Path(root) / f"{cluster.embedder}-w{window}-k{k}"


def _embeddings_folder(cluster: ClusterConfig, window: int, root: Path) -> Path:
    """ROOT/emb-EMBEDDER-wL: shared by every k."""
    return Path(root) / f"emb-{cluster.embedder}-w{window}"


def load_clustering(cluster: ClusterConfig, window: int, root: Path, k: int) -> Clustering:
    """The finished clustering of ``k`` clusters (as asked: the folder's k) -> Clustering; FileNotFoundError if
    run_clustering has not made it."""
    folder = clustering_folder(cluster, window, root, k)
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"{folder} has no clustering; run `{recipe_command('cluster')}` with this config")
    h = json.loads((folder / "histograms.json").read_text())
    return Clustering(folder, len(np.load(folder / "centroids.npy")), np.load(folder / "centroids.npy"), h)


def run_clustering(cluster: ClusterConfig, window: int, root: Path, data: PreparedData, ks: list[int] | None = None,
                   log=print) -> dict[int, dict]:
    """Embed all windows of ``window`` tokens under ``root`` (DATA/clusters), then for each k (default cluster.k
    and cluster.k_importance) fit/assign/report. Returns {k asked: manifest}."""
    from mlx_pn.clustering.embed import get_embedder

    for k_req in ks or []:  # before any embedding: a k of 0 must not cost minutes, nor name a folder k0
        if k_req < 1:
            raise ConfigError(f"--k {k_req}: a cluster count must be >= 1; pass e.g. --k 16 (or omit --k to build "
                              f"cluster.k and cluster.k_importance)")
    emb_dir = _embeddings_folder(cluster, window, root)
    emb_dir.mkdir(parents=True, exist_ok=True)
    embedder = get_embedder(cluster.embedder)
    t0 = time.time()
    vecs = {(c, s): embed_split(data, c, s, embedder, cluster.embedder, window, emb_dir, cluster.batch_size, log)
            for c in data.corpora for s in ("train", "valid", "test")}  # {(corpus, split): (N, D)}
    embed_s = time.time() - t0
    log(f"[cluster] embedded {sum(len(v) for v in vecs.values()):,} windows of {window} tokens "
        f"with '{cluster.embedder}' in {embed_s:.0f} s")

    generic = vecs[(GENERIC, "train")]  # (N, D)
    rng = np.random.default_rng(cluster.seed)
    fit_idx = np.sort(rng.choice(len(generic), min(len(generic), cluster.fit_windows), replace=False))  # (F,)
    fit = np.asarray(generic[fit_idx])  # (F, D)
    domains = data.domain_names()
    # computed once, and only when some k is not done yet (a finished clustering reruns nothing)
    heldout_domain_nmi = functools.cache(lambda: _heldout_domain_nmi(vecs, domains, cluster.seed))
    results = {}
    for k_req in ks or [cluster.k, cluster.k_importance]:
        k = max(1, min(k_req, len(generic) // MIN_WINDOWS_PER_CLUSTER))
        if k != k_req:
            log(f"[cluster] k={k_req} is too large for {len(generic):,} generic windows "
                f"(< {MIN_WINDOWS_PER_CLUSTER} per cluster); using k={k}")
        folder = clustering_folder(cluster, window, root, k_req)
        results[k_req] = _cluster_one(cluster, window, folder, data, vecs, fit, k, k_req, heldout_domain_nmi, embed_s,
                                      log)
    return results


def _heldout_domain_nmi(vecs, domains: list[str], seed: int) -> float | None:
    """k-means with k = #domains on the domains' held-out windows: how separable they are (data-notes: 0.95)."""
    xs = [np.asarray(np.concatenate([vecs[(d, "valid")], vecs[(d, "test")]])) for d in domains]  # [(N_d, D)]
    if len(domains) < 2 or min(len(x) for x in xs) == 0:
        return None
    # (sum N_d, D) held-out windows and their (sum N_d,) domain index
    x, truth = np.concatenate(xs), np.concatenate([np.full(len(a), i) for i, a in enumerate(xs)])
    return nmi(kmeans(x, len(domains), seed=seed, spherical=True, n_init=3).labels, truth)


def _cluster_one(cluster: ClusterConfig, window: int, folder: Path, data, vecs, fit, k, k_req, heldout_nmi,
                 embed_s, log) -> dict:
    """Fit k-means (k clusters) on ``fit`` (F, D), label every window of ``vecs``, write ``folder`` -> manifest."""
    manifest_path = folder / "manifest.json"
    key = {"k": k, "k_requested": k_req, "embedder": cluster.embedder, "window": window, "seed": cluster.seed,
           "fit_windows": len(fit),
           "shards": {c: data.corpora[c].manifest["splits"]["train"]["sha256"] for c in data.corpora}}
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if m.get("key") == key:
            log(f"[cluster] k={k_req}: already done ({folder})")
            return m
    t0 = time.time()
    log(f"[cluster] k-means k={k} on {len(fit):,} generic windows (at most {cluster.iters} iterations)")
    km = kmeans(fit, k, iters=cluster.iters, seed=cluster.seed, spherical=True, progress=True)  # (K, D) unit rows
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    labels = {}  # {(corpus, split): (N,) int32}
    for (c, s), v in vecs.items():
        labels[(c, s)] = assign(np.asarray(v), km.centroids) if len(v) else np.zeros(0, np.int32)
        _save_npy_atomic(folder / "labels" / f"{c}.{s}.npy", labels[(c, s)].astype(np.int32))
    _save_npy_atomic(folder / "centroids.npy", km.centroids.astype(np.float32))
    hists = {c: histogram(labels[(c, "train")], k).tolist() for c in data.corpora}  # {corpus: (K,)}
    write_json_atomic(folder / "histograms.json", hists)

    domains = data.domain_names()
    is_stats = {}
    g_labels = labels[(GENERIC, "train")]  # (N,)
    for d in domains:
        idx = resample(g_labels, np.asarray(hists[d]), n=len(g_labels), seed=cluster.seed)  # (N,) generic window ids
        is_stats[d] = resample_stats(idx, g_labels, np.asarray(hists[d]), k)
        is_stats[d]["top_cluster_share"] = float(max(hists[d]))
    domain_nmi_k = nmi(np.concatenate([labels[(d, "test")] for d in domains]),
                       np.concatenate([np.full(len(labels[(d, "test")]), i) for i, d in enumerate(domains)]))
    manifest = {"key": key, "inertia": km.inertia, "n_iter": km.n_iter, "converged": km.converged,
                "n_reseeded": km.n_reseeded, "fit_s": time.time() - t0, "embed_s": embed_s,
                "windows": {f"{c}.{s}": int(len(v)) for (c, s), v in labels.items()},
                "heldout_domain_nmi_k_domains": heldout_nmi(), "domain_nmi_at_k": domain_nmi_k,
                "importance_resampling": is_stats}
    _write_report(folder, data, labels, k, k_req, manifest, cluster.embedder, window)
    write_json_atomic(manifest_path, manifest)  # written last: its presence means "done"
    log(f"[cluster] k={k}: inertia {km.inertia:.1f} after {km.n_iter} iterations; report {folder / 'report.md'}")
    return manifest


def _write_report(folder, data, labels, k, k_req, manifest, embedder: str, window: int) -> None:
    g = labels[(GENERIC, "train")]  # (N,)
    # terms/snippets from a deterministic sample of generic windows (decoding all of them is slow)
    take = np.linspace(0, len(g) - 1, num=min(len(g), 3000)).astype(int) if len(g) else np.zeros(0, int)  # (<= 3000,)
    toks = data.corpora[GENERIC].tokens("train")
    texts = [data.tokenizer.decode(toks[w * window:(w + 1) * window]) for w in take]
    domain_labels = {d: labels[(d, "train")] for d in data.domain_names()}
    body = cluster_report(g[take], texts, k, domain_labels=domain_labels)
    hn = manifest["heldout_domain_nmi_k_domains"]
    lines = [f"# Clusters: {embedder} embeddings of {window}-token windows, k={k}"
             + (f" (asked {k_req})" if k != k_req else ""), "",
             f"- k-means on {manifest['key']['fit_windows']:,} generic windows: inertia {manifest['inertia']:.2f}, "
             f"{manifest['n_iter']} iterations, converged: {manifest['converged']}",
             f"- held-out domain separability (k-means with k = number of domains, NMI vs domain): "
             f"{hn:.3f}" if hn is not None else "- held-out domain separability: n/a",
             f"- NMI of these k={k} clusters vs domain on held-out domain windows: {manifest['domain_nmi_at_k']:.3f}",
             "", "## Importance resampling of the generic windows to each domain's histogram", "",
             "| domain | top-cluster share | ESS / generic windows | unique | max repeats | TV distance | lost mass |",
             "|---|---|---|---|---|---|---|"]
    for d, s in manifest["importance_resampling"].items():
        lines.append(f"| {d} | {s['top_cluster_share']:.2f} | {s['ess_fraction']:.3f} | {s['unique_fraction']:.2f} | "
                     f"{s['max_repeats']} | {s['tv_distance']:.3f} | {s['lost_mass']:.3f} |")
    write_text_atomic(folder / "report.md", "\n".join(lines) + "\n\n" + body + "\n")
