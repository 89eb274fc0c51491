"""Deterministic packed batches of fixed length: no padding, so the compiled step never retraces.

The token stream is cut into ``n = (len - 1) // L`` windows of ``L + 1`` tokens (inputs and the
shifted targets). Sample ``g`` (counting across steps) is window ``perm_e[g % n]`` with
``e = g // n`` and ``perm_e`` a permutation seeded by ``(seed, e)``: batch ``i`` is a pure function
of ``i``, so resuming at step ``s`` needs nothing but ``s``.

For the cluster-routed methods (slm-pn, slm-hn, slm-mix) the same class can (a) draw only from a
subset of window indices (``indices``: one expert's cluster) and (b) return each window's cluster id
(``labels``, one id per window ``w`` of the split) next to its tokens.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from mlx_pn.commands import recipe_command
from mlx_pn.data.sources import DataError


class PackedBatches:
    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, name: str = "data", *,
                 indices: np.ndarray | None = None, labels: np.ndarray | None = None):
        """indices: draw only these window indices; labels: per-window cluster ids -> batch() returns
        (tokens, ids). Window w covers tokens[w*L : w*L+L+1] in every case."""
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        total = max(0, (len(tokens) - 1) // seq_len)
        if indices is not None:
            indices = np.asarray(indices, dtype=np.int64)
            if len(indices) and (indices.min() < 0 or indices.max() >= total):
                raise DataError(f"{name}: window indices must be in [0, {total}), got [{indices.min()}, "
                                f"{indices.max()}]")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int32)
            if len(labels) < total:
                raise DataError(f"{name}: {len(labels)} cluster labels for {total} windows of {seq_len} tokens; "
                                f"the clustering was made with another window length or shard (rerun "
                                f"`{recipe_command('cluster')}` with this config)")
        self.indices, self.labels = indices, labels
        self.n_windows = total if indices is None else len(indices)
        if self.n_windows < batch_size:
            raise DataError(
                f"{name}: {len(tokens)} tokens make {self.n_windows} windows of {seq_len}, fewer than one batch "
                f"of {batch_size}; add data or lower batch_size/seq_len")
        self._perm: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)}
        return self._perm[epoch]

    def window_ids(self, index: int, count: int) -> np.ndarray:
        """Window indices (into the token stream) of samples index..index+count-1 -> (count,) int64."""
        out = np.empty(count, dtype=np.int64)
        for j in range(count):
            g = index + j
            out[j] = self._permutation(g // self.n_windows)[g % self.n_windows]
        return out if self.indices is None else self.indices[out]

    def windows(self, index: int, count: int) -> np.ndarray:
        """Windows for samples index..index+count-1 -> (count, L + 1) int32."""
        out = np.empty((count, self.seq_len + 1), dtype=np.int32)
        for j, w in enumerate(self.window_ids(index, count)):
            out[j] = self.tokens[w * self.seq_len: w * self.seq_len + self.seq_len + 1]
        return out

    def batch(self, step: int, micro_batches: int = 1, shard: tuple[int, int] = (0, 1)):
        """The batch of optimizer step `step` -> (micro_batches, B, L + 1) int32, or with labels the tuple
        (tokens (A, B, L + 1), cluster ids (A, B) int32).

        shard=(r, n): data-parallel rank r of n reads only rows [r*B/n, (r+1)*B/n) of each micro-batch
        -> (A, B/n, L + 1); the n shards put together are exactly the unsharded batch."""
        per_step = self.batch_size * micro_batches
        ids = self.window_ids(step * per_step, per_step).reshape(micro_batches, self.batch_size)
        r, n = shard
        if n > 1:
            if self.batch_size % n:
                raise DataError(f"batch_size={self.batch_size} is not divisible by {n} data-parallel ranks")
            ids = ids[:, r * self.batch_size // n: (r + 1) * self.batch_size // n]
        rows = ids.shape[1]
        ids = ids.reshape(-1)
        w = np.empty((len(ids), self.seq_len + 1), dtype=np.int32)
        for j, i in enumerate(ids):
            w[j] = self.tokens[i * self.seq_len: i * self.seq_len + self.seq_len + 1]
        w = w.reshape(micro_batches, rows, self.seq_len + 1)
        if self.labels is None:
            return w
        return w, self.labels[ids].reshape(micro_batches, rows)

    def epochs(self, steps: int, micro_batches: int = 1) -> float:
        return steps * self.batch_size * micro_batches / self.n_windows


class ClusterGroupedBatches:
    """Micro-batches whose B windows all come from one cluster: `batch(step, A)` -> (tokens (A, B, L + 1),
    cluster ids (A,) int32).

    For the projected network this means one materialised MLP per micro-batch (a plain matmul, ~the SLM's
    step cost) instead of one per sequence. The cluster of micro-batch (step, a) is drawn with the clusters'
    window shares, then B of its windows without replacement, from a generator seeded by (seed, step, a):
    a pure function of the step (exact resume), but windows are not visited once per epoch.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, labels: np.ndarray, seed: int = 0,
                 name: str = "data"):
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        n = max(0, (len(tokens) - 1) // seq_len)
        labels = np.asarray(labels, dtype=np.int32)[:n]
        if len(labels) < n:
            raise DataError(f"{name}: {len(labels)} cluster labels for {n} windows; rerun `{recipe_command('cluster')}`")
        groups = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        self.groups = {c: w for c, w in groups.items() if len(w) >= batch_size}  # a batch needs B windows
        if not self.groups:
            raise DataError(f"{name}: no cluster has {batch_size} windows of {seq_len} tokens; lower batch_size")
        self.clusters = np.array(sorted(self.groups))
        sizes = np.array([len(self.groups[c]) for c in self.clusters], dtype=np.float64)
        self.p = sizes / sizes.sum()
        self.n_windows = int(sizes.sum())

    def batch(self, step: int, micro_batches: int = 1, shard: tuple[int, int] = (0, 1)):
        """shard=(r, n): rows [r*B/n, (r+1)*B/n) of each micro-batch (data-parallel rank r of n); the cluster
        ids (A,) are the same on every rank."""
        r, n = shard
        if self.batch_size % n:
            raise DataError(f"batch_size={self.batch_size} is not divisible by {n} data-parallel ranks")
        lo, hi = r * self.batch_size // n, (r + 1) * self.batch_size // n
        out = np.empty((micro_batches, hi - lo, self.seq_len + 1), dtype=np.int32)
        ids = np.empty(micro_batches, dtype=np.int32)
        for a in range(micro_batches):
            rng = np.random.default_rng([self.seed, step, a])
            c = int(self.clusters[rng.choice(len(self.clusters), p=self.p)])
            for j, w in enumerate(rng.choice(self.groups[c], self.batch_size, replace=False)[lo:hi]):
                out[a, j] = self.tokens[w * self.seq_len: w * self.seq_len + self.seq_len + 1]
            ids[a] = c
        return out, ids

    def epochs(self, steps: int, micro_batches: int = 1) -> float:
        return steps * self.batch_size * micro_batches / self.n_windows


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int = 0) -> np.ndarray:
    """Consecutive windows from the start of a held-out split -> (N, L + 1); the tail is dropped.

    If the split is shorter than one window, one shorter window is returned (never silently nothing).
    """
    n = max(0, (len(tokens) - 1) // seq_len)
    if n == 0:
        if len(tokens) < 2:
            raise DataError(f"held-out split has {len(tokens)} tokens; it needs at least 2 to measure perplexity")
        return np.asarray(tokens, dtype=np.int32)[None]
    if max_windows:
        n = min(n, max_windows)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None]
    return np.asarray(tokens[idx], dtype=np.int32)


class Prefetcher:
    """Builds the next batches in a background thread so the data pipeline never stalls the step.

    `wait_s` is the total time get() spent blocked on an empty queue (the loop logs it as `data_wait_s`):
    ~0 means the step, not the data, sets the pace."""

    def __init__(self, make_batch, start: int, stop: int, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_s = 0.0

        def work():
            try:
                for i in range(start, stop):
                    if self._stop.is_set():
                        return
                    self._q.put((i, make_batch(i)))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                self._q.put((None, e))

        self._t = threading.Thread(target=work, daemon=True)
        self._t.start()

    def get(self):
        t = time.perf_counter()
        i, item = self._q.get()
        self.wait_s += time.perf_counter() - t
        if i is None:
            raise item
        return i, item

    def close(self):
        self._stop.set()
        while not self._q.empty():
            self._q.get_nowait()
