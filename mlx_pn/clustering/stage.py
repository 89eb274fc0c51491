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

Memory does not grow with the corpus: windows are decoded and embedded PART at a time (the shard is mapped
afresh per part, so its pages do not pile up), the embeddings and labels are written and read as .npy files
chunk by chunk (plain reads, not a memory map), the k-means sees at most cluster.fit_windows rows, and the
histograms are counted chunk by chunk. What grows is disk: 4 D bytes of embedding and 4 bytes of label per
window.
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
from mlx_pn.clustering.kmeans import MIN_WINDOWS_PER_CLUSTER, _chunk_rows, assign, cluster_report, kmeans, nmi
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.clustering.sampling import resample, resample_stats
from mlx_pn.io import atomic_file, remove_tree, write_json_atomic, write_text_atomic

PART = 4096  # windows per resumable embedding part
# The report's importance-resampling statistics draw min(N, this) generic windows: the draw is O(draws) memory, so
# a corpus of any size costs the same here; below it (about 1 GB of text at 256-token windows) the draw is all N.
REPORT_DRAWS = 1 << 20


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


def _write_npy_chunks(path: Path, shape: tuple, dtype, chunks) -> None:
    """A .npy of ``shape`` written atomically from an iterable of row blocks (never the whole array at once)."""
    def write(f):
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": tuple(shape)})
        rows = 0
        for block in chunks:
            block = np.ascontiguousarray(block, dtype=dtype)
            f.write(block.tobytes())
            rows += len(block)
        if rows != shape[0]:
            raise RuntimeError(f"{path}: wrote {rows} rows, expected {shape[0]}")
    atomic_file(path, write)


def npy_rows(path: Path, chunk: int):
    """Blocks of at most ``chunk`` rows of the .npy at ``path``, read with plain reads: resident memory stays
    one block whatever the file's size (a memory map would keep every page it touched resident)."""
    with open(path, "rb") as f:
        shape, fortran, dtype = _header(f)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not written by this stage; delete it to rebuild")
        row = int(np.prod(shape[1:], dtype=np.int64))
        for s in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - s)
            yield np.fromfile(f, dtype=dtype, count=n * row).reshape((n, *shape[1:]))


def npy_shape(path: Path) -> tuple:
    """Shape of the .npy at ``path`` (its header only)."""
    with open(path, "rb") as f:
        return _header(f)[0]


def _header(f) -> tuple:
    """(shape, fortran_order, dtype) of an open .npy, the file left at its first data byte."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def embed_split(data: PreparedData, corpus: str, split: str, embedder, name: str, window: int, folder: Path,
                batch_size: int = 64, log=print) -> Path:
    """Embed every window of one split into ``folder/CORPUS.SPLIT.npy`` (N, D) float32 -> its path, cached.

    PART windows at a time: each part is decoded from a fresh map of the shard, embedded and saved as
    ``CORPUS.SPLIT.parts/NNNNN.npy``, so a killed run resumes at the last finished part; the parts are
    then copied one by one into the final file and their folder removed."""
    c = data.corpora[corpus]
    final, meta_path = folder / f"{corpus}.{split}.npy", folder / f"{corpus}.{split}.json"
    meta = {"shard_sha256": c.manifest["splits"][split]["sha256"], "embedder": name, "window": window}
    parts = folder / f"{corpus}.{split}.parts"
    if final.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        if parts.exists():  # a run killed after the final file, before removing its parts
            remove_tree(parts)
        return final
    n = c.manifest["splits"][split]["tokens"] // window  # N windows; a partial tail is not a training window
    parts.mkdir(parents=True, exist_ok=True)
    if (parts / "meta.json").exists() and json.loads((parts / "meta.json").read_text()) != meta:
        remove_tree(parts)  # renamed away first: a kill mid-deletion must not leave old parts to be reused
        parts.mkdir()
    write_json_atomic(parts / "meta.json", meta)
    names = [parts / f"{i:05d}.npy" for i in range(-(-n // PART))]
    done = sum(p.exists() for p in names)
    bar = tqdm(total=n, initial=min(n, done * PART), desc=f"embed {corpus}.{split}", unit="win", leave=False)
    for i, start in enumerate(range(0, n, PART)):
        if names[i].exists():
            continue
        tokens = c.tokens(split)  # (T,) a fresh memmap per part: the pages of the last one are released
        texts = window_texts(tokens, window, data.tokenizer, start, start + PART)
        del tokens
        vecs = np.asarray(embedder.embed(texts, batch_size), np.float32)  # (<= PART, D)
        _save_npy_atomic(names[i], vecs)
        bar.update(len(vecs))
    bar.close()
    dim = npy_shape(names[0])[1] if names else 384
    _write_npy_chunks(final, (n, dim), np.float32, (np.load(p) for p in names))
    write_json_atomic(meta_path, meta)
    remove_tree(parts)
    return final


def sweep_parts(folder: Path, live: set[str]) -> list[Path]:
    """Remove ``folder/CORPUS.SPLIT.parts`` folders that no current split will resume (its corpus is gone, or its
    final file is done) -> the removed paths. A killed stage's parts of a current split stay: they are its
    resume point."""
    removed = []
    for p in sorted(Path(folder).glob("*.parts")):
        stem = p.name[:-len(".parts")]
        if stem not in live or (folder / f"{stem}.npy").exists() and (folder / f"{stem}.json").exists():
            remove_tree(p)
            removed.append(p)
    return removed


@dataclass
class Clustering:
    """One finished clustering on disk: centroids (K, D) float32, histograms {corpus: (K,) P(cluster) of its
    train windows}, and per split the labels (N,) int32 of every window."""

    folder: Path
    k: int
    centroids: np.ndarray
    histograms: dict[str, list[float]]

    def labels(self, corpus: str, split: str = "train") -> np.ndarray:
        """(N,) int32 cluster id of every window of the split, memory-mapped (read only what is used)."""
        return np.load(self.folder / "labels" / f"{corpus}.{split}.npy", mmap_mode="r")


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
    splits = [(c, s) for c in data.corpora for s in ("train", "valid", "test")]
    for p in sweep_parts(emb_dir, {f"{c}.{s}" for c, s in splits}):
        log(f"[cluster] removed {p.name}, left by a run killed after its embeddings were done or of a corpus "
            f"no longer in the config")
    embedder = _LazyEmbedder(lambda: get_embedder(cluster.embedder))  # loaded only if a split is not embedded yet
    t0 = time.time()
    vecs = {(c, s): embed_split(data, c, s, embedder, cluster.embedder, window, emb_dir, cluster.batch_size, log)
            for c, s in splits}  # {(corpus, split): path of its (N, D) embeddings}
    embed_s = time.time() - t0
    sizes = {cs: npy_shape(p)[0] for cs, p in vecs.items()}  # {(corpus, split): N}
    log(f"[cluster] embedded {sum(sizes.values()):,} windows of {window} tokens "
        f"with '{cluster.embedder}' in {embed_s:.0f} s")

    n_generic = sizes[(GENERIC, "train")]
    rng = np.random.default_rng(cluster.seed)
    fit_idx = np.sort(rng.choice(n_generic, min(n_generic, cluster.fit_windows), replace=False))  # (F,)
    fit = _rows_at(vecs[(GENERIC, "train")], fit_idx)  # (F, D)
    domains = data.domain_names()
    # computed once, and only when some k is not done yet (a finished clustering reruns nothing)
    heldout_domain_nmi = functools.cache(lambda: _heldout_domain_nmi(vecs, domains, cluster.seed))
    results = {}
    for k_req in ks or [cluster.k, cluster.k_importance]:
        k = max(1, min(k_req, n_generic // MIN_WINDOWS_PER_CLUSTER))
        if k != k_req:
            log(f"[cluster] k={k_req} is too large for {n_generic:,} generic windows "
                f"(< {MIN_WINDOWS_PER_CLUSTER} per cluster); using k={k}")
        folder = clustering_folder(cluster, window, root, k_req)
        results[k_req] = _cluster_one(cluster, window, folder, data, vecs, sizes, fit, k, k_req, heldout_domain_nmi,
                                      embed_s, log)
    return results


class _LazyEmbedder:
    """The embedder, loaded at its first use: a finished clustering is read back without it installed (a machine
    that trains from carried clusters, or an embedder removed since)."""

    def __init__(self, load):
        self._load, self._embedder = load, None

    def embed(self, texts, batch_size):
        if self._embedder is None:
            self._embedder = self._load()
        return self._embedder.embed(texts, batch_size)


def _rows_at(path: Path, idx: np.ndarray, chunk: int = PART) -> np.ndarray:
    """Rows ``idx`` (F,) sorted ascending of the .npy at ``path`` -> (F, D), read block by block."""
    out, s = [], 0
    for block in npy_rows(path, chunk):
        a, b = np.searchsorted(idx, [s, s + len(block)])
        out.append(block[idx[a:b] - s])
        s += len(block)
    return np.concatenate(out) if out else np.zeros((0, npy_shape(path)[1]), np.float32)


def _heldout_domain_nmi(vecs, domains: list[str], seed: int) -> float | None:
    """k-means with k = #domains on the domains' held-out windows: how separable they are (data-notes: 0.95).
    None when there are fewer than 2 domains (NMI against a single domain says nothing)."""
    if len(domains) < 2:
        return None
    xs = [np.concatenate([np.load(vecs[(d, "valid")]), np.load(vecs[(d, "test")])]) for d in domains]  # [(N_d, D)]
    if min(len(x) for x in xs) == 0:
        return None
    # (sum N_d, D) held-out windows and their (sum N_d,) domain index
    x, truth = np.concatenate(xs), np.concatenate([np.full(len(a), i) for i, a in enumerate(xs)])
    return nmi(kmeans(x, len(domains), seed=seed, spherical=True, n_init=3).labels, truth)


def _assign_split(src: Path, dest: Path, n: int, centroids: np.ndarray, k: int, bar) -> np.ndarray:
    """Label every row of the embeddings ``src`` (n, D), streamed into ``dest`` (n,) int32 -> its (k,) counts.
    PART rows at a time (6 MiB at D = 384): assign()'s own chunk for k >= 1024, and at small k its 65,536-row
    chunk would hold ~100 MB three times over; each row's label does not depend on the block it is in."""
    rows = min(_chunk_rows(65536, k), PART)
    counts = np.zeros(k, np.int64)

    def blocks():
        for x in npy_rows(src, rows):
            lab = assign(x, centroids).astype(np.int32)
            counts[:] += np.bincount(lab, minlength=k)
            bar.update(len(lab))
            yield lab

    _write_npy_chunks(dest, (n,), np.int32, blocks())
    return counts


def _domain_nmi_at_k(folder: Path, domains: list[str]) -> float | None:
    """NMI of the clusters vs the domain on the domains' test windows; None with fewer than 2 domains."""
    if len(domains) < 2:
        return None
    labs = [np.load(folder / "labels" / f"{d}.test.npy") for d in domains]
    return nmi(np.concatenate(labs), np.concatenate([np.full(len(x), i) for i, x in enumerate(labs)]))


def _cluster_one(cluster: ClusterConfig, window: int, folder: Path, data, vecs, sizes, fit, k, k_req, heldout_nmi,
                 embed_s, log) -> dict:
    """Fit k-means (k clusters) on ``fit`` (F, D), label every window of ``vecs`` ({(corpus, split): path}) in a
    streamed pass, write ``folder`` -> manifest."""
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
    counts = {}  # {(corpus, split): (K,) windows per cluster}
    with tqdm(total=sum(sizes.values()), desc=f"assign k={k}", unit="win", leave=False) as bar:
        for (c, s), path in vecs.items():
            counts[(c, s)] = _assign_split(path, folder / "labels" / f"{c}.{s}.npy", sizes[(c, s)], km.centroids, k,
                                           bar)
    _save_npy_atomic(folder / "centroids.npy", km.centroids.astype(np.float32))
    hists = {c: (counts[(c, "train")] / max(1, counts[(c, "train")].sum())).tolist() for c in data.corpora}
    write_json_atomic(folder / "histograms.json", hists)

    domains = data.domain_names()
    is_stats = {}
    g_labels = np.load(folder / "labels" / f"{GENERIC}.train.npy", mmap_mode="r")  # (N,) read in chunks
    for d in domains:
        n_draws = min(len(g_labels), REPORT_DRAWS)
        idx = resample(g_labels, np.asarray(hists[d]), n=n_draws, seed=cluster.seed)  # (n_draws,) generic window ids
        is_stats[d] = resample_stats(idx, g_labels, np.asarray(hists[d]), k)
        is_stats[d]["top_cluster_share"] = float(max(hists[d]))
        del idx
    del g_labels
    manifest = {"key": key, "inertia": km.inertia, "n_iter": km.n_iter, "converged": km.converged,
                "n_reseeded": km.n_reseeded, "fit_s": time.time() - t0, "embed_s": embed_s,
                "windows": {f"{c}.{s}": int(n) for (c, s), n in sizes.items()},
                "heldout_domain_nmi_k_domains": heldout_nmi(), "domain_nmi_at_k": _domain_nmi_at_k(folder, domains)}
    manifest["importance_resampling"] = is_stats
    _write_report(folder, data, k, k_req, manifest, cluster.embedder, window)
    write_json_atomic(manifest_path, manifest)  # written last: its presence means "done"
    log(f"[cluster] k={k}: inertia {km.inertia:.1f} after {km.n_iter} iterations; report {folder / 'report.md'}")
    return manifest


NMI_NEEDS_DOMAINS = "n/a: NMI against the domain needs at least 2 domains"


def _write_report(folder, data, k, k_req, manifest, embedder: str, window: int) -> None:
    g = np.load(folder / "labels" / f"{GENERIC}.train.npy", mmap_mode="r")  # (N,)
    # terms/snippets from a deterministic sample of generic windows (decoding all of them is slow)
    take = np.linspace(0, len(g) - 1, num=min(len(g), 3000)).astype(int) if len(g) else np.zeros(0, int)  # (<= 3000,)
    toks = data.corpora[GENERIC].tokens("train")
    texts = [data.tokenizer.decode(toks[w * window:(w + 1) * window]) for w in take]
    del toks
    domain_labels = {d: np.load(folder / "labels" / f"{d}.train.npy", mmap_mode="r") for d in data.domain_names()}
    body = cluster_report(np.asarray(g[take]), texts, k, domain_labels=domain_labels)
    hn, nk = manifest["heldout_domain_nmi_k_domains"], manifest["domain_nmi_at_k"]
    lines = [f"# Clusters: {embedder} embeddings of {window}-token windows, k={k}"
             + (f" (asked {k_req})" if k != k_req else ""), "",
             f"- k-means on {manifest['key']['fit_windows']:,} generic windows: inertia {manifest['inertia']:.2f}, "
             f"{manifest['n_iter']} iterations, converged: {manifest['converged']}",
             f"- held-out domain separability (k-means with k = number of domains, NMI vs domain): "
             f"{hn:.3f}" if hn is not None else f"- held-out domain separability: {NMI_NEEDS_DOMAINS}"
             + (f" (this run has {len(data.domain_names())})" if len(data.domain_names()) < 2 else
                " (a domain has no held-out windows)"),
             f"- NMI of these k={k} clusters vs domain on held-out domain windows: "
             + (f"{nk:.3f}" if nk is not None else f"{NMI_NEEDS_DOMAINS} (this run has {len(data.domain_names())})"),
             "", "## Importance resampling of the generic windows to each domain's histogram", "",
             "| domain | top-cluster share | ESS / generic windows | unique | max repeats | TV distance | lost mass |",
             "|---|---|---|---|---|---|---|"]
    for d, s in manifest["importance_resampling"].items():
        lines.append(f"| {d} | {s['top_cluster_share']:.2f} | {s['ess_fraction']:.3f} | {s['unique_fraction']:.2f} | "
                     f"{s['max_repeats']} | {s['tv_distance']:.3f} | {s['lost_mass']:.3f} |")
    write_text_atomic(folder / "report.md", "\n".join(lines) + "\n\n" + body + "\n")
