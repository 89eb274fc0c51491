"""k-means on window embeddings, nearest-centroid assignment, cluster histograms and reports.

Shared by slm-is, slm-mix, slm-pn and slm-hn (paper-notes.md §3): every generic and domain window
is embedded, k-means runs once on generic windows (paper: k=1024 for importance sampling, 16-32 for
mixtures and projected networks), every window is assigned to its nearest centroid, and each
domain is summarised by its cluster histogram.

Notation: N windows, D embedding size, k clusters, B rows per chunk, t k-means++ candidates per step.

Distances use ||x||^2 - 2 x.c + ||c||^2 on chunks of B rows (one (B, k) matrix at a time), so memory
stays at O(N D + B k) however large N is: k-means holds one float32 copy of x in MLX (centred, for
float32 accuracy), assign() none. The matmuls (distances, k-means++ candidates, per-cluster sums)
run in MLX; on a CPU the per-row argmin reads MLX's buffer in numpy (faster than MLX's CPU argmin),
and the bookkeeping (counts, empty-cluster repair, convergence) is numpy. On 2 CPU cores a Lloyd
iteration costs ~1.5-2x scikit-learn's fused Cython one and k-means++ ~3.5x less
(tools/bench_kmeans.py).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

import mlx_pn  # noqa: F401  (optimized BLAS before mlx.core)
import mlx.core as mx

# Below this many windows per cluster, per-domain histograms get noisy and IS repeats windows.
MIN_WINDOWS_PER_CLUSTER = 50
# Largest (B, k) distance matrix, in elements, whatever batch_size asks for (2^22 fp32 = 16 MiB): a
# score matrix that stays in cache is faster (k=1024, N=100k, 2 cores: 0.67 s/pass at B=4096 vs
# 1.09 s at B=65536) and bounds memory.
_MAX_CHUNK_ELEMENTS = 1 << 22


@dataclass
class KMeansResult:
    """centroids (k, D) float32; labels (N,) int32 (nearest centroid of each row); inertia: the sum of
    squared Euclidean distances of rows to their centroid; n_iter: centroid updates run.

    history[i] is the inertia after i updates (history[0]: right after k-means++); it never increases
    beyond float rounding. n_reseeded counts empty clusters re-seeded during the run; n_empty counts
    clusters still empty at the end (only when the data has fewer distinct points than k).
    init_seconds / seconds: wall time of k-means++ and of the whole fit (all n_init runs).
    """

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    history: list[float] = field(default_factory=list)
    converged: bool = False
    n_reseeded: int = 0
    n_empty: int = 0
    seed: int = 0
    init_seconds: float = 0.0
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- checks


def warn_if_k_too_large(n_points: int, k: int, min_per_cluster: int = MIN_WINDOWS_PER_CLUSTER,
                        stacklevel: int = 2) -> bool:
    """Warn (and return True) when there are fewer than ``min_per_cluster`` windows per cluster."""
    if k > 0 and n_points / k < min_per_cluster:
        warnings.warn(
            f"k={k} clusters for N={n_points} windows is {n_points / k:.1f} windows per cluster (< {min_per_cluster}): "
            f"cluster histograms will be noisy and importance resampling will repeat windows; lower k to at most "
            f"{max(1, n_points // min_per_cluster)} or embed more windows (paper: k=1024 for slm-is, 16-32 for "
            f"slm-mix/slm-pn, on millions of windows)", stacklevel=stacklevel)
        return True
    return False


def _check_points(x, name: str = "x") -> np.ndarray:
    """(N, D) numbers -> a C-contiguous (N, D) float32 copy or view; a clear ValueError otherwise."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (windows, embedding dim), got shape {x.shape}; "
                         f"stack one embedding per row")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} has shape {x.shape}: no windows to cluster; embed some windows first")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} has dtype {x.dtype}; pass float embeddings")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name} has {rows.size} row(s) with NaN/inf (first rows {rows[:5].tolist()}); "
                         f"drop or re-embed those windows before clustering")
    return x


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer number of clusters, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1; pass a positive number of clusters")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of windows N={n}; lower k")
    return k


def _chunk_rows(batch_size: int, k: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    return max(1, min(batch_size, max(256, _MAX_CHUNK_ELEMENTS // max(k, 1))))


# ------------------------------------------------------------------------------------------ distances


def _nearest(score: mx.array, x2: np.ndarray | None):
    """argmin and min of a (B, k) score ||c||^2 - 2 x.c, plus ||x||^2 (B,) -> labels (B,) int32, squared
    distances (B,) float32 (None when ``x2`` is None: labels only).

    On the CPU the reduction runs in numpy on MLX's buffer (zero copy): MLX's CPU argmin is
    single-threaded scalar code, 3-5x slower than numpy's at k >= 256. On a GPU it stays in MLX.
    """
    if mx.default_device() == mx.cpu:
        mx.eval(score)
        s = np.asarray(score)
        lb = s.argmin(axis=1).astype(np.int32)
        d = s[np.arange(len(lb)), lb] if x2 is not None else None
    else:
        lbm = mx.argmin(score, axis=1)
        dm = mx.take_along_axis(score, lbm[:, None], axis=1)[:, 0] if x2 is not None else None
        mx.eval(lbm, *([dm] if dm is not None else []))
        lb = np.asarray(lbm).astype(np.int32)
        d = np.asarray(dm) if dm is not None else None
    if x2 is not None:
        d = np.maximum(d + x2, 0.0).astype(np.float32)
    return lb, d


# Up to this k, per-cluster sums are a one-hot matmul (cheaper than the sort + gather it replaces).
_ONEHOT_MAX_K = 64


def _pass(X: mx.array, x2: np.ndarray, c: np.ndarray, rows: int, sums: bool):
    """Nearest centroid (c: (k, D)) of every row of X (N, D), x2 = ||X||^2 (N,) -> labels (N,) int32, squared
    distances (N,) float32, and, if ``sums``, per-cluster sums of rows (k, D) float64 (accumulated on the host
    per chunk of B = ``rows`` rows)."""
    N, D = X.shape
    k = c.shape[0]
    cm = mx.array(c)
    cT, c2 = cm.T, (cm * cm).sum(axis=1)[None, :]  # (D, k), (1, k)
    labels = np.empty(N, dtype=np.int32)
    dist = np.empty(N, dtype=np.float32)
    total = np.zeros((k, D), dtype=np.float64) if sums else None
    for s in range(0, N, rows):
        xb = X[s:s + rows]  # (B, D)
        score = mx.addmm(c2, xb, cT, alpha=-2.0, beta=1.0)  # (B, k): ||c||^2 - 2 x.c; argmin needs no ||x||^2
        lb, db = _nearest(score, x2[s:s + rows])
        del score
        labels[s:s + rows], dist[s:s + rows] = lb, db
        if sums:
            # Per-cluster sums. Small k: one-hot^T @ rows, 2 B k D flops in BLAS. Larger k: sort the
            # chunk's rows by label and run one segmented matmul ones(1, B) @ rows[segment c]: O(B D)
            # whatever k is, ~4x faster on a CPU than MLX's scatter-add (scalar updates).
            if k <= _ONEHOT_MAX_K:
                part = (mx.array(lb)[:, None] == mx.arange(k)[None, :]).astype(mx.float32).T @ xb  # (k, D)
            else:
                order = np.argsort(lb, kind="stable").astype(np.int32)  # (B,)
                ends = np.cumsum(np.bincount(lb, minlength=k))  # (k,)
                segs = mx.array(  # (k, 2) [start, end) of each cluster's rows in the sorted chunk
                    np.stack([np.concatenate([[0], ends[:-1]]), ends], axis=1).astype(np.uint32))
                part = mx.segmented_mm(mx.ones((1, len(lb)), dtype=mx.float32), xb[mx.array(order)], segs)  # (k,1,D)
            mx.eval(part)
            total += np.asarray(part).reshape(k, D)
    return labels, dist, total


def assign(x, centroids, batch_size: int = 65536) -> np.ndarray:
    """Nearest centroid (Euclidean) of every row of ``x`` (N, D) -> labels (N,) int32.

    Rows are processed in chunks of at most ``batch_size`` (numpy in, MLX compute), so ``x`` may be a memmap.
    Ties go to the lowest centroid index. For unit-norm centroids (spherical k-means) this is also
    the highest-cosine centroid.
    """
    c = _check_points(centroids, "centroids")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"x has shape {x.shape} but centroids have dim {c.shape[1]}; embed the windows with "
                         f"the same model that produced the centroids")
    mean = c.mean(axis=0, dtype=np.float64)  # (D,)
    cc = (c - mean).astype(np.float32)  # (k, D); centring both sides keeps float32 distances accurate
    cm = mx.array(cc)
    cT, c2 = cm.T, (cm * cm).sum(axis=1)[None, :]  # (D, k), (1, k)
    rows = _chunk_rows(batch_size, c.shape[0])
    labels = np.empty(x.shape[0], dtype=np.int32)  # (N,)
    for s in range(0, x.shape[0], rows):
        xb = np.asarray(x[s:s + rows], dtype=np.float32)  # (B, D)
        if not np.isfinite(xb).all():
            raise ValueError(f"x has NaN/inf in rows {s}..{s + len(xb) - 1}; drop or re-embed those windows")
        score = mx.addmm(c2, mx.array(xb - mean.astype(np.float32)), cT, alpha=-2.0, beta=1.0)  # (B, k)
        labels[s:s + rows] = _nearest(score, None)[0]
    return labels


# ------------------------------------------------------------------------------------------- k-means


def _kmeans_pp(X: mx.array, x2: mx.array, k: int, rng: np.random.Generator, bar=None) -> np.ndarray:
    """Greedy k-means++ (as scikit-learn) on X (N, D), x2 = ||X||^2 (N,) -> initial centres (k, D) float32:
    each new centre is the best of t = 2 + ln(k) candidates drawn with probability proportional to the
    squared distance to the nearest centre chosen so far. bar: a progress bar advanced once per centre (k = 1024
    on 100k windows is over a minute)."""
    N = X.shape[0]
    trials = 2 + int(math.log(k))
    idx = [int(rng.integers(N))]
    closest = mx.maximum(x2 - 2.0 * (X @ X[idx[0]]) + x2[idx[0]], 0.0)  # (N,)
    pot = float(closest.sum().item())
    for _ in range(1, k):
        if pot <= 0.0:
            # Every row sits on a chosen centre (fewer distinct points than k): any unused row will do.
            used = set(idx)
            rest = [i for i in rng.permutation(N)[: len(idx) + k] if i not in used]
            idx.append(int(rest[0]))
            if bar is not None:
                bar.update(1)
            continue
        # Inverse-CDF sampling on the device: cand = #(cumsum < u * pot), i.e. searchsorted(..., 'left').
        u = mx.array(rng.random(trials).astype(np.float32) * np.float32(pot))  # (t,)
        cum = mx.cumsum(closest)  # (N,)
        cand = mx.minimum(mx.sum(cum[:, None] < u[None, :], axis=0), N - 1).astype(mx.int32)  # (t,)
        C = X[cand]  # (t, D)
        d = mx.maximum(x2[:, None] - 2.0 * (X @ C.T) + (C * C).sum(axis=1)[None, :], 0.0)  # (N, t)
        d = mx.minimum(d, closest[:, None])
        pots = d.sum(axis=0)  # (t,) potential after adding each candidate
        best = mx.argmin(pots)
        closest = d[:, best]  # (N,)
        mx.eval(closest, cand, pots, best)
        b = int(best.item())
        idx.append(int(np.array(cand)[b]))
        pot = float(np.array(pots)[b])
        if bar is not None:
            bar.update(1)
    return np.array(X[mx.array(np.array(idx, dtype=np.int32))], dtype=np.float32)


def _normalise(c: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows of c (k, D) scaled to unit norm; a (near-)zero row takes the same row of ``fallback`` (k, D)."""
    n = np.linalg.norm(c, axis=1, keepdims=True)  # (k, 1)
    ok = n[:, 0] > 1e-12
    out = fallback.copy()
    out[ok] = c[ok] / n[ok]
    return out


def _update(X: mx.array, labels: np.ndarray, dist: np.ndarray, sums: np.ndarray, c: np.ndarray,
            spherical: bool) -> tuple[np.ndarray, int]:
    """New centroids (k, D) float32 = cluster means, from labels (N,), dist (N,), sums (k, D) of the last pass
    and the current centroids c (k, D); an empty cluster takes the row farthest from its centroid.

    As in scikit-learn, the moved row is also taken out of its old cluster's sum, so the new
    centroids are the means of a partition whose cost is below the current one: inertia cannot grow.
    """
    k = c.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.int64)  # (k,)
    sums = sums.copy()
    empty = np.flatnonzero(counts == 0)
    reseeded = 0
    if empty.size:
        order = np.argsort(-dist, kind="stable")  # farthest first, ties by row index: deterministic
        picked = []
        for p in order:
            if len(picked) == empty.size or dist[p] <= 0.0:
                break
            if counts[labels[p]] > 1:  # never empty another cluster to fill this one
                counts[labels[p]] -= 1
                picked.append(int(p))
        if picked:
            rows = np.array(X[mx.array(np.array(picked, dtype=np.int32))], dtype=np.float64)  # (len(picked), D)
            for e, p, r in zip(empty, picked, rows):
                sums[labels[p]] -= r
                sums[e] = r
                counts[e] = 1
            reseeded = len(picked)
    new = c.astype(np.float64)
    nz = counts > 0
    new[nz] = sums[nz] / counts[nz, None]
    if spherical:
        new = _normalise(new, c.astype(np.float64))
    return new.astype(np.float32), reseeded


def _fit_once(X, x2, k, iters, tol, rng, rows, spherical, progress, desc):
    """One k-means++ + Lloyd run on X (N, D), x2 (N,) -> centroids (k, D), labels (N,), inertia history,
    updates run, converged, rows re-seeded, k-means++ seconds."""
    t0 = time.perf_counter()
    init_bar = None
    if progress:
        from tqdm import tqdm
        init_bar = tqdm(total=k, initial=1, desc=f"{desc}: k-means++ start", unit="centre", leave=False)
    c = _kmeans_pp(X, x2, k, rng, bar=init_bar)
    if init_bar is not None:
        init_bar.close()
    init_s = time.perf_counter() - t0
    x2 = np.asarray(x2)  # the Lloyd passes add ||x||^2 on the host
    if spherical:
        c = _normalise(c.astype(np.float64), np.eye(k, c.shape[1], dtype=np.float64)).astype(np.float32)
    labels, dist, sums = _pass(X, x2, c, rows, sums=True)
    history = [float(dist.sum(dtype=np.float64))]
    n_iter, converged, reseeded = 0, False, 0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=iters, desc=desc, unit="iter", leave=False)
    while n_iter < iters:
        c, r = _update(X, labels, dist, sums, c, spherical)
        reseeded += r
        n_iter += 1
        new_labels, dist, sums = _pass(X, x2, c, rows, sums=True)
        history.append(float(dist.sum(dtype=np.float64)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(inertia=f"{history[-1]:.5g}")
        same = r == 0 and np.array_equal(new_labels, labels)
        labels = new_labels
        prev = history[-2]
        if same or prev <= 0.0 or (prev - history[-1]) < tol * prev:
            converged = True
            break
    if bar is not None:
        bar.close()
    return c, labels, history, n_iter, converged, reseeded, init_s


def kmeans(x, k: int, *, iters: int = 50, tol: float = 1e-4, seed: int = 0, batch_size: int = 65536,
           n_init: int = 1, spherical: bool = False, progress: bool = False) -> KMeansResult:
    """k-means++ then Lloyd's iterations, in MLX; deterministic for a given ``seed``.

    x: (N, D) embeddings (a memmap is fine; a float32 copy goes to MLX). Stops after ``iters``
    updates, when no label changes, or when inertia falls by less than ``tol`` (relative) in one
    update. ``n_init`` runs (seeds derived from ``seed``) keep the lowest inertia. ``spherical``
    L2-normalises centroids after every update: for unit-norm sentence embeddings, nearest centroid
    is then highest cosine, and the centroid is the normalised mean direction. Distances are
    computed at most ``batch_size`` rows at a time (fewer when k is large, so that the (rows, k)
    score matrix stays near 16 MiB).
    """
    t0 = time.perf_counter()
    x = _check_points(x)
    N, D = x.shape
    k = _check_k(k, N)
    if iters < 0 or n_init < 1 or tol < 0:
        raise ValueError(f"iters={iters} (>= 0), n_init={n_init} (>= 1) and tol={tol} (>= 0) out of range")
    warn_if_k_too_large(N, k, stacklevel=3)
    # Centre the data (not in spherical mode: normalisation is relative to the origin) so that
    # float32 ||x||^2 - 2 x.c + ||c||^2 does not cancel away small distances.
    mean = np.zeros(D, dtype=np.float64) if spherical else x.mean(axis=0, dtype=np.float64)
    X = mx.array(x)  # (N, D)
    if not spherical:
        X = X - mx.array(mean.astype(np.float32))
    x2 = (X * X).sum(axis=1)  # (N,)
    mx.eval(X, x2)
    rows = _chunk_rows(batch_size, k)
    best, init_s = None, 0.0
    for i in range(n_init):
        run_seed = seed if i == 0 else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        rng = np.random.default_rng(run_seed)
        desc = f"k-means k={k}" + (f" init {i + 1}/{n_init}" if n_init > 1 else "")
        c, labels, history, n_iter, converged, reseeded, t_init = _fit_once(
            X, x2, k, iters, tol, rng, rows, spherical, progress, desc)
        init_s += t_init
        if best is None or history[-1] < best[2][-1]:
            best = (c, labels, history, n_iter, converged, reseeded, run_seed)
    c, labels, history, n_iter, converged, reseeded, run_seed = best
    n_empty = int((np.bincount(labels, minlength=k) == 0).sum())
    if n_empty:
        warnings.warn(f"k-means ended with {n_empty} empty cluster(s) of k={k}: the data has fewer distinct "
                      f"points than k (duplicated windows?); lower k or deduplicate", stacklevel=2)
    return KMeansResult(centroids=(c + mean).astype(np.float32), labels=labels, inertia=history[-1],
                        n_iter=n_iter, history=history, converged=converged, n_reseeded=reseeded,
                        n_empty=n_empty, seed=run_seed, init_seconds=init_s, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- histograms


def _check_labels(labels, k: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D cluster ids, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} has dtype {labels.dtype}; pass integer cluster ids")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"{name} has ids in [{labels.min()}, {labels.max()}] outside [0, k={k}); "
                         f"pass the k the labels were assigned with")
    return labels.astype(np.int64, copy=False)


def histogram(labels, k: int, smoothing: float = 0.0) -> np.ndarray:
    """Cluster histogram P(c) (k,) float64 summing to 1, with ``smoothing`` added to every count."""
    labels = _check_labels(labels, k)
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing} must be >= 0")
    h = np.bincount(labels, minlength=k).astype(np.float64) + smoothing
    if h.sum() <= 0:
        raise ValueError("histogram of no labels with smoothing=0 is undefined; pass labels or smoothing > 0")
    return h / h.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return max(0.0, float(-(p * np.log(p)).sum()))  # never -0.0


def nmi(labels_a, labels_b) -> float:
    """Normalised mutual information, MI / mean(H(a), H(b)) (scikit-learn's default normalisation).

    1 for identical partitions (whatever the ids), about 0 for independent ones; two one-cluster
    labelings score 1 (as scikit-learn).
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labels_a and labels_b have lengths {a.size} and {b.size}; pass one label per window each")
    if a.size == 0:
        return 1.0
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    if ua.size == ub.size == 1:
        return 1.0
    joint = np.bincount(ia * ub.size + ib, minlength=ua.size * ub.size).reshape(ua.size, ub.size) / a.size
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    denom = 0.5 * (_entropy(pa) + _entropy(pb))
    return float(np.clip(max(mi, 0.0) / max(denom, np.finfo(np.float64).eps), 0.0, 1.0))


# -------------------------------------------------------------------------------------------- report

_WORD = re.compile(r"[a-z][a-z0-9']+")
_STOP = frozenset(
    "the and for that with this from are was were been have has had not but you your they their them his her "
    "its our out who what when where which will would can could should may might must shall all any some one "
    "two also into than then there here these those such more most other only over very just about after "
    "before being both each few because between does did doing down during further him how same she off once "
    "own so too under until while why yourself itself himself herself themselves ourselves upon per via "
    "it's don't i'm he's she's that's there's".split())


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP]


def _snippet(text: str, n: int = 160) -> str:
    s = " ".join(text.split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def _spread(idx: np.ndarray, m: int) -> np.ndarray:
    """At most m evenly spaced entries of idx (deterministic)."""
    if idx.size <= m:
        return idx
    return idx[np.linspace(0, idx.size - 1, m).round().astype(np.int64)]


def cluster_report(labels, texts, k: int, domain_labels: dict[str, np.ndarray] | None = None, top_terms: int = 8,
                   examples: int = 2, max_texts_per_cluster: int = 2000) -> str:
    """A Markdown report: per cluster its size and share, its top terms and example snippets; with
    ``domain_labels`` ({domain: cluster ids of its windows}), each domain's histogram summary.

    Top terms: term frequency in the cluster's texts times the inverse document frequency over all
    texts (log((1 + N) / (1 + df)) + 1), so words common everywhere rank low. At most
    ``max_texts_per_cluster`` texts per cluster (evenly spaced) are read for terms; examples are the
    cluster's texts at evenly spaced positions in window order (deterministic).
    """
    labels = _check_labels(labels, k)
    texts = list(texts)
    if len(texts) != labels.size:
        raise ValueError(f"texts has {len(texts)} entries but labels has {labels.size}; pass one text per window")
    N = labels.size
    counts = np.bincount(labels, minlength=k)
    members = [np.flatnonzero(labels == c) for c in range(k)] if N else [np.empty(0, np.int64)] * k
    read = {c: _spread(members[c], max_texts_per_cluster) for c in range(k)}
    # Tokenise each text read once; df over all texts read.
    toks: dict[int, list[str]] = {}
    df: Counter = Counter()
    for c in range(k):
        for i in read[c]:
            t = _terms(texts[i])
            toks[int(i)] = t
            df.update(set(t))
    n_read = max(1, len(toks))
    share = counts / max(N, 1)
    order = np.argsort(-counts, kind="stable")
    out = ["# Cluster report", "", "## Summary", "",
           f"- windows: {N}", f"- clusters: k={k}, non-empty {int((counts > 0).sum())}",
           f"- windows per cluster: mean {N / k:.1f}, min {int(counts.min())}, max {int(counts.max())}",
           f"- size entropy: {_entropy(share) / math.log(2):.2f} bits (uniform: {math.log2(k):.2f})"]
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        out.append(f"- empty clusters: {empty.tolist()[:50]}{' …' if empty.size > 50 else ''}")
    if N / k < MIN_WINDOWS_PER_CLUSTER:
        out.append(f"- warning: {N / k:.1f} windows per cluster (< {MIN_WINDOWS_PER_CLUSTER}); histograms are noisy")
    out += ["", "## Clusters", "", "| cluster | windows | share | top terms |", "|---:|---:|---:|---|"]
    top: dict[int, list[str]] = {}
    for c in order:
        if counts[c] == 0:
            continue
        tf: Counter = Counter()
        for i in read[c]:
            tf.update(toks[int(i)])
        total = max(1, sum(tf.values()))
        scored = sorted(((n / total) * (math.log((1 + n_read) / (1 + df[w])) + 1.0), w) for w, n in tf.items())
        top[c] = [w for _, w in sorted(scored, key=lambda s: (-s[0], s[1]))[:top_terms]]
        out.append(f"| {c} | {counts[c]} | {share[c]:.1%} | {', '.join(top[c])} |")
    out += ["", "## Examples", ""]
    for c in order:
        if counts[c] == 0:
            continue
        out.append(f"### Cluster {c} ({counts[c]} windows, {share[c]:.1%})")
        out.append("")
        for i in _spread(members[c], examples):
            out.append(f"- `{int(i)}`: {_snippet(texts[i])}")
        out.append("")
    if domain_labels:
        out += ["## Domains", "",
                "Share of each domain's windows in its most frequent clusters; entropy of its histogram "
                "(perplexity = 2^entropy, the effective number of clusters).", "",
                "| domain | windows | top-1 share | top clusters (share) | entropy (bits) | perplexity |",
                "|---|---:|---:|---|---:|---:|"]
        for name in sorted(domain_labels):
            dl = _check_labels(domain_labels[name], k, f"domain_labels[{name!r}]")
            if dl.size == 0:
                out.append(f"| {name} | 0 | - | - | - | - |")
                continue
            h = histogram(dl, k)
            best = np.argsort(-h, kind="stable")[:3]
            tops = ", ".join(f"{int(c)} ({h[c]:.0%})" for c in best if h[c] > 0)
            ent = _entropy(h) / math.log(2)
            out.append(f"| {name} | {dl.size} | {h[best[0]]:.2f} | {tops} | {ent:.2f} | {2 ** ent:.1f} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
