"""The clustering stage: embed every token window, fit k-means on generic windows, label all windows.

Windows are the training windows of :class:`mlx_pn.data.batches.PackedBatches` (window ``w`` of a
split covers tokens ``[w*L, (w+1)*L)``), so every training window of every corpus gets a cluster id:
what slm-mix/slm-pn route by and what slm-is resamples. Files, all resumable:

    DATA/clusters/emb-EMBEDDER-wL/CORPUS.SPLIT.npy       (N, 384) float32 unit vectors (+ .json)
    DATA/clusters/EMBEDDER-wL-kK/centroids.npy           (K, 384)
    DATA/clusters/EMBEDDER-wL-kK/labels/CORPUS.SPLIT.npy (N,) int32
    DATA/clusters/EMBEDDER-wL-kK/histograms.json, report.md, manifest.json
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlx_pn.config import Config
from mlx_pn.clustering.kmeans import MIN_WINDOWS_PER_CLUSTER, assign, cluster_report, histogram, kmeans, nmi
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.clustering.sampling import resample, resample_stats
from mlx_pn.io import atomic_file, remove_tree, write_json_atomic, write_text_atomic

PART = 4096  # windows per resumable embedding part


def window_len(cfg: Config) -> int:
    return cfg.cluster.window or cfg.pretrain.seq_len


def window_texts(tokens: np.ndarray, window: int, tok, start: int = 0, stop: int | None = None) -> list[str]:
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
    tokens = c.tokens(split)
    n = len(tokens) // window
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
            _save_npy_atomic(part, np.asarray(vecs, np.float32))
        out.append(np.load(part))
        bar.update(len(out[-1]))
    bar.close()
    emb = np.concatenate(out)
    _save_npy_atomic(final, emb)
    write_json_atomic(meta_path, meta)
    remove_tree(parts)
    return emb


@dataclass
class Clustering:
    folder: Path
    k: int
    centroids: np.ndarray
    histograms: dict[str, list[float]]

    def labels(self, corpus: str, split: str = "train") -> np.ndarray:
        return np.load(self.folder / "labels" / f"{corpus}.{split}.npy")


def clusters_folder(cfg: Config, k: int) -> Path:
    return cfg.data_dir / "clusters" / f"{cfg.cluster.embedder}-w{window_len(cfg)}-k{k}"


def load_clustering(cfg: Config, k: int) -> Clustering:
    folder = clusters_folder(cfg, k)
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"{folder} has no clustering; run `python -m recipes.cluster` with this config")
    h = json.loads((folder / "histograms.json").read_text())
    return Clustering(folder, len(np.load(folder / "centroids.npy")), np.load(folder / "centroids.npy"), h)


def run_clustering(cfg: Config, data: PreparedData, ks: list[int] | None = None, log=print) -> dict[int, dict]:
    """Embed all windows, then for each k fit/assign/report. Returns {k: manifest}."""
    from mlx_pn.clustering.embed import get_embedder

    cc, window = cfg.cluster, window_len(cfg)
    emb_dir = cfg.data_dir / "clusters" / f"emb-{cc.embedder}-w{window}"
    emb_dir.mkdir(parents=True, exist_ok=True)
    embedder = get_embedder(cc.embedder)
    t0 = time.time()
    vecs = {(c, s): embed_split(data, c, s, embedder, cc.embedder, window, emb_dir, cc.batch_size, log)
            for c in data.corpora for s in ("train", "valid", "test")}
    embed_s = time.time() - t0
    log(f"[cluster] embedded {sum(len(v) for v in vecs.values()):,} windows of {window} tokens "
        f"with '{cc.embedder}' in {embed_s:.0f} s")

    generic = vecs[(GENERIC, "train")]
    rng = np.random.default_rng(cc.seed)
    fit_idx = np.sort(rng.choice(len(generic), min(len(generic), cc.fit_windows), replace=False))
    fit = np.asarray(generic[fit_idx])
    domains = data.domain_names()
    heldout_domain_nmi = _heldout_domain_nmi(vecs, domains, cc.seed)
    results = {}
    for k_req in ks or [cc.k, cc.k_importance]:
        k = max(1, min(k_req, len(generic) // MIN_WINDOWS_PER_CLUSTER))
        if k != k_req:
            log(f"[cluster] k={k_req} is too large for {len(generic):,} generic windows "
                f"(< {MIN_WINDOWS_PER_CLUSTER} per cluster); using k={k}")
        results[k_req] = _cluster_one(cfg, data, vecs, fit, k, k_req, heldout_domain_nmi, embed_s, log)
    return results


def _heldout_domain_nmi(vecs, domains: list[str], seed: int) -> float | None:
    """k-means with k = #domains on the domains' held-out windows: how separable they are (data-notes: 0.95)."""
    xs = [np.asarray(np.concatenate([vecs[(d, "valid")], vecs[(d, "test")]])) for d in domains]
    if len(domains) < 2 or min(len(x) for x in xs) == 0:
        return None
    x, truth = np.concatenate(xs), np.concatenate([np.full(len(a), i) for i, a in enumerate(xs)])
    return nmi(kmeans(x, len(domains), seed=seed, spherical=True, n_init=3).labels, truth)


def _cluster_one(cfg, data, vecs, fit, k, k_req, heldout_nmi, embed_s, log) -> dict:
    folder = clusters_folder(cfg, k_req)
    manifest_path = folder / "manifest.json"
    key = {"k": k, "k_requested": k_req, "embedder": cfg.cluster.embedder, "window": window_len(cfg),
           "seed": cfg.cluster.seed, "fit_windows": len(fit),
           "shards": {c: data.corpora[c].manifest["splits"]["train"]["sha256"] for c in data.corpora}}
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if m.get("key") == key:
            log(f"[cluster] k={k_req}: already done ({folder})")
            return m
    t0 = time.time()
    km = kmeans(fit, k, iters=cfg.cluster.iters, seed=cfg.cluster.seed, spherical=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    labels = {}
    for (c, s), v in vecs.items():
        labels[(c, s)] = assign(np.asarray(v), km.centroids) if len(v) else np.zeros(0, np.int32)
        _save_npy_atomic(folder / "labels" / f"{c}.{s}.npy", labels[(c, s)].astype(np.int32))
    _save_npy_atomic(folder / "centroids.npy", km.centroids.astype(np.float32))
    hists = {c: histogram(labels[(c, "train")], k).tolist() for c in data.corpora}
    write_json_atomic(folder / "histograms.json", hists)

    domains = data.domain_names()
    is_stats = {}
    g_labels = labels[(GENERIC, "train")]
    for d in domains:
        idx = resample(g_labels, np.asarray(hists[d]), n=len(g_labels), seed=cfg.cluster.seed)
        is_stats[d] = resample_stats(idx, g_labels, np.asarray(hists[d]), k)
        is_stats[d]["top_cluster_share"] = float(max(hists[d]))
    domain_nmi_k = nmi(np.concatenate([labels[(d, "test")] for d in domains]),
                       np.concatenate([np.full(len(labels[(d, "test")]), i) for i, d in enumerate(domains)]))
    manifest = {"key": key, "inertia": km.inertia, "n_iter": km.n_iter, "converged": km.converged,
                "n_reseeded": km.n_reseeded, "fit_s": time.time() - t0, "embed_s": embed_s,
                "windows": {f"{c}.{s}": int(len(v)) for (c, s), v in labels.items()},
                "heldout_domain_nmi_k_domains": heldout_nmi, "domain_nmi_at_k": domain_nmi_k,
                "importance_resampling": is_stats}
    _write_report(folder, data, labels, k, k_req, manifest, cfg)
    write_json_atomic(manifest_path, manifest)  # written last: its presence means "done"
    log(f"[cluster] k={k}: inertia {km.inertia:.1f} after {km.n_iter} iterations; report {folder / 'report.md'}")
    return manifest


def _write_report(folder, data, labels, k, k_req, manifest, cfg) -> None:
    window = window_len(cfg)
    g = labels[(GENERIC, "train")]
    # terms/snippets from a deterministic sample of generic windows (decoding all of them is slow)
    take = np.linspace(0, len(g) - 1, num=min(len(g), 3000)).astype(int) if len(g) else np.zeros(0, int)
    toks = data.corpora[GENERIC].tokens("train")
    texts = [data.tokenizer.decode(toks[w * window:(w + 1) * window]) for w in take]
    domain_labels = {d: labels[(d, "train")] for d in data.domain_names()}
    body = cluster_report(g[take], texts, k, domain_labels=domain_labels)
    hn = manifest["heldout_domain_nmi_k_domains"]
    lines = [f"# Clusters: {cfg.cluster.embedder} embeddings of {window}-token windows, k={k}"
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
