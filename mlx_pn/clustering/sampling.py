"""Importance sampling of generic windows by cluster (slm-is, docs/paper.md §4).

The domain loss is E_{x~gen}[w(x) l(x)] with w(x) = P(c(x)|domain) / P(c(x)|generic), c(x) the hard
cluster of window x. As in the paper, generic windows are *resampled* rather than loss-weighted:
draw a cluster from the domain histogram, then a generic window uniformly from that cluster.
Everything here is numpy and deterministic given the seed.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np


def _check_hist(h, name: str, k: int | None = None) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"{name} must be a 1-D cluster histogram, got shape {h.shape}")
    if k is not None and h.size != k:
        raise ValueError(f"{name} has {h.size} clusters but k={k}; use histograms from the same k-means")
    if not np.isfinite(h).all() or (h < 0).any():
        raise ValueError(f"{name} has negative or non-finite entries; pass counts or probabilities")
    if h.sum() <= 0:
        raise ValueError(f"{name} sums to 0; the domain has no windows assigned to any cluster")
    return h / h.sum()


# Labels are read this many at a time: a memory-mapped (N,) labels file of any length costs O(CHUNK) here.
CHUNK = 1 << 20


def _check_labels(labels, k: int, name: str = "generic_labels") -> np.ndarray:
    """(N,) integer cluster ids in [0, k), checked chunk by chunk; a memmap is returned as it is (not loaded)."""
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be 1-D integer cluster ids, got {labels.dtype} of shape {labels.shape}")
    for s in range(0, labels.size, CHUNK):
        part = np.asarray(labels[s:s + CHUNK])
        if part.min() < 0 or part.max() >= k:
            raise ValueError(f"{name} has ids in [{part.min()}, {part.max()}] outside [0, k={k}); "
                             f"use the domain histogram from the same k-means")
    return labels


def _counts(labels: np.ndarray, k: int) -> np.ndarray:
    """(k,) int64 windows per cluster, read chunk by chunk."""
    out = np.zeros(k, np.int64)
    for s in range(0, labels.size, CHUNK):
        out += np.bincount(np.asarray(labels[s:s + CHUNK], np.int64), minlength=k)
    return out


def _windows_of(labels: np.ndarray, k: int, c: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Index of the j-th window (in window order) of cluster c, for every pair of (n,) c and j -> (n,) int64.

    The same as ``argsort(labels, kind="stable")[starts[c] + j]`` without the (N,) sort: a first pass counts
    each cluster's windows before every chunk, a second finds each pair inside its chunk."""
    n_chunks = max(1, -(-labels.size // CHUNK))
    before = np.zeros((n_chunks + 1, k), np.int64)  # before[i, c]: windows of c in chunks < i
    for i in range(n_chunks):
        before[i + 1] = before[i] + np.bincount(np.asarray(labels[i * CHUNK:(i + 1) * CHUNK], np.int64), minlength=k)
    by_c = np.argsort(c, kind="stable")  # pairs grouped by cluster (one sort, not k scans)
    cb = np.searchsorted(c[by_c], np.arange(k + 1))  # (k + 1,) group bounds
    chunk_of = np.empty(c.size, np.int64)  # (n,) the chunk holding each pair's window
    for cl in np.flatnonzero(np.diff(cb)):
        sel = by_c[cb[cl]:cb[cl + 1]]
        chunk_of[sel] = np.searchsorted(before[:, cl], j[sel], side="right") - 1
    by_chunk = np.argsort(chunk_of, kind="stable")
    hb = np.searchsorted(chunk_of[by_chunk], np.arange(n_chunks + 1))  # (n_chunks + 1,) group bounds
    out = np.empty(c.size, np.int64)
    for i in np.flatnonzero(np.diff(hb)):
        sel = by_chunk[hb[i]:hb[i + 1]]
        lab = np.asarray(labels[i * CHUNK:(i + 1) * CHUNK], np.int64)
        order = np.argsort(lab, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(lab, minlength=k))[:-1]])
        out[sel] = i * CHUNK + order[starts[c[sel]] + j[sel] - before[i, c[sel]]]
    return out


def importance_weights(domain_hist, generic_hist, smoothing: float = 1e-6) -> np.ndarray:
    """w(c) = P(c|domain) / P(c|generic) per cluster -> (k,) float64.

    Both histograms are normalised to sum 1 (counts are fine). The generic histogram is smoothed,
    (g + smoothing) / (1 + k * smoothing), so a cluster with no generic windows gets a large but
    finite weight instead of a division by zero. That weight multiplies no window: the domain mass
    in clusters the generic corpus lacks is simply absent from E_gen[w l] (the weighted loss then
    covers only 1 - lost of the domain), and :func:`resample` renormalises it away over the other
    clusters. :func:`lost_mass` measures it.
    """
    d = _check_hist(domain_hist, "domain_hist")
    g = _check_hist(generic_hist, "generic_hist", d.size)
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing} must be >= 0")
    gs = (g + smoothing) / (1.0 + d.size * smoothing)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(d > 0, d / gs, 0.0)
    if not np.isfinite(w).all():
        raise ValueError("generic_hist is 0 where domain_hist is not and smoothing=0; pass smoothing > 0")
    return w


def lost_mass(generic_labels, domain_hist) -> float:
    """Share of the domain histogram in clusters that hold no generic window."""
    d = _check_hist(domain_hist, "domain_hist")
    counts = _counts(_check_labels(generic_labels, d.size), d.size)
    return float(d[counts == 0].sum())


def resample(generic_labels, domain_hist, n: int, seed: int = 0, replace: bool = True) -> np.ndarray:
    """n indices into the generic windows whose cluster histogram follows ``domain_hist``.

    Each draw picks a cluster c ~ P(c|domain), then a generic window uniformly among those in c (the
    paper's practice). Clusters with domain mass but no generic window cannot be drawn: their mass is
    renormalised over the others, with a warning saying how much. ``replace=False`` uses each window
    at most once: cluster quotas are drawn as with replacement, capped at the cluster's size, and the
    excess goes to clusters with room in proportion to their domain mass (so the histogram drifts
    when the domain asks for more of a cluster than the generic corpus holds). The result is
    shuffled, deterministic given ``seed``. ``generic_labels`` may be a memmap of any length: it is read in
    chunks, so memory is O(n + CHUNK), not O(N).
    """
    d = _check_hist(domain_hist, "domain_hist")
    k = d.size
    labels = _check_labels(generic_labels, k)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer number of windows")
    counts = _counts(labels, k)
    missing = (counts == 0) & (d > 0)
    lost = float(d[missing].sum())
    if lost >= 1.0 - 1e-12:
        raise ValueError("no generic window falls in any cluster of the domain histogram; check that both were "
                         "assigned with the same centroids, or lower k")
    if lost > 0:
        miss = np.flatnonzero(missing)
        warnings.warn(f"{lost:.2%} of the domain's cluster mass is in {miss.size} cluster(s) with no generic "
                      f"windows (e.g. {miss[:8].tolist()}); renormalised over the other clusters. Lower k or "
                      f"add generic data to cover them", stacklevel=2)
    p = np.where(missing, 0.0, d)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    n = int(n)
    if replace:  # (cluster, rank of the window inside it) pairs, then the windows they name
        c = rng.choice(k, size=n, p=p)
        j = np.minimum((rng.random(n) * counts[c]).astype(np.int64), counts[c] - 1)
        return _windows_of(labels, k, c, j)
    room = np.where(p > 0, counts, 0)
    if n > room.sum():
        raise ValueError(f"n={n} exceeds the {int(room.sum())} generic windows in the domain's clusters; "
                         f"use replace=True or lower n")
    quota = rng.multinomial(n, p)
    while True:  # cap at cluster sizes and hand the excess to clusters with room, by domain mass
        excess = int(np.maximum(quota - room, 0).sum())
        quota = np.minimum(quota, room)
        if excess == 0:
            break
        free = p * (quota < room)
        quota += rng.multinomial(excess, free / free.sum())
    ranks = [(np.full(q, c), rng.choice(counts[c], size=q, replace=False)) for c, q in enumerate(quota) if q]
    out = (_windows_of(labels, k, np.concatenate([r[0] for r in ranks]).astype(np.int64),
                       np.concatenate([r[1] for r in ranks]).astype(np.int64)) if ranks else np.empty(0, np.int64))
    return rng.permutation(out).astype(np.int64)


@dataclass
class ResampleStats:
    """What a resample costs and how well it matches the domain.

    n: windows drawn; n_generic: generic windows available.
    ess: Kish effective sample size of the implied per-window weights w_i = p(c_i) / P(c_i|generic)
    over the generic windows, (sum w)^2 / sum w^2 = 1 / sum_c p(c)^2 / n_c (p: the domain histogram
    renormalised over clusters with generic windows, n_c: generic windows in c); ess_fraction = ess /
    n_generic (1 when the domain looks like the generic corpus).
    unique_fraction: distinct windows / n; max_repeats: most draws of one window.
    tv_distance: total variation between the resampled cluster histogram and the domain histogram
    as given (it includes lost_mass); tv_reachable: the same against the renormalised target
    (sampling noise alone). lost_mass: domain mass in clusters with no generic window.
    """

    n: int
    n_generic: int
    ess: float
    ess_fraction: float
    unique_fraction: float
    max_repeats: int
    tv_distance: float
    tv_reachable: float
    lost_mass: float

    def as_dict(self) -> dict:
        return asdict(self)


def _draw_counts(labels: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """(k,) counts of the clusters of windows ``idx`` (n,), the labels read chunk by chunk."""
    sidx = np.sort(idx)
    out = np.zeros(k, np.int64)
    for s in range(0, labels.size, CHUNK):
        a, b = np.searchsorted(sidx, [s, s + CHUNK])
        if b > a:
            out += np.bincount(np.asarray(labels[s:s + CHUNK], np.int64)[sidx[a:b] - s], minlength=k)
    return out


def resample_stats(indices, generic_labels, domain_hist, k: int) -> dict:
    """:class:`ResampleStats` (as a dict) of ``indices`` drawn by :func:`resample`."""
    d = _check_hist(domain_hist, "domain_hist", k)
    labels = _check_labels(generic_labels, k)
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= labels.size):
        raise ValueError(f"indices fall outside [0, {labels.size}); pass indices into the generic windows")
    counts = _counts(labels, k).astype(np.float64)
    has = counts > 0
    lost = float(d[~has].sum())
    p = np.where(has, d, 0.0)
    p = p / p.sum() if p.sum() > 0 else p
    ess = 1.0 / float((p[has] ** 2 / counts[has]).sum()) if p.sum() > 0 else 0.0
    if idx.size:
        got = _draw_counts(labels, idx, k) / idx.size
        tv, tv_r = 0.5 * float(np.abs(got - d).sum()), 0.5 * float(np.abs(got - p).sum())
        uniq, rep = np.unique(idx, return_counts=True)
        unique_fraction, max_repeats = uniq.size / idx.size, int(rep.max())
    else:
        tv = tv_r = unique_fraction = float("nan")
        max_repeats = 0
    return ResampleStats(n=int(idx.size), n_generic=int(labels.size), ess=ess,
                         ess_fraction=ess / max(labels.size, 1), unique_fraction=float(unique_fraction),
                         max_repeats=max_repeats, tv_distance=tv, tv_reachable=tv_r, lost_mass=lost).as_dict()
