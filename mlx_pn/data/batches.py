"""Deterministic packed batches of fixed length: no padding, so the compiled step never retraces.

The token stream is cut into ``n = (len - 1) // L`` windows of ``L + 1`` tokens (inputs and the
shifted targets). Sample ``g`` (counting across steps) is window ``perm_e[g % n]`` with
``e = g // n`` and ``perm_e`` a permutation seeded by ``(seed, e)``: batch ``i`` is a pure function
of ``i``, so resuming at step ``s`` needs nothing but ``s``.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from mlx_pn.data.sources import DataError


class PackedBatches:
    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, name: str = "data"):
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.n_windows = max(0, (len(tokens) - 1) // seq_len)
        if self.n_windows < batch_size:
            raise DataError(
                f"{name}: {len(tokens)} tokens make {self.n_windows} windows of {seq_len}, fewer than one batch "
                f"of {batch_size}; add data or lower batch_size/seq_len")
        self._perm: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)}
        return self._perm[epoch]

    def windows(self, index: int, count: int) -> np.ndarray:
        """Windows for samples index..index+count-1 -> (count, L + 1) int32."""
        out = np.empty((count, self.seq_len + 1), dtype=np.int32)
        for j in range(count):
            g = index + j
            w = int(self._permutation(g // self.n_windows)[g % self.n_windows])
            out[j] = self.tokens[w * self.seq_len: w * self.seq_len + self.seq_len + 1]
        return out

    def batch(self, step: int, micro_batches: int = 1) -> np.ndarray:
        """The batch of optimizer step `step` -> (micro_batches, B, L + 1) int32."""
        per_step = self.batch_size * micro_batches
        w = self.windows(step * per_step, per_step)
        return w.reshape(micro_batches, self.batch_size, self.seq_len + 1)

    def epochs(self, steps: int, micro_batches: int = 1) -> float:
        return steps * self.batch_size * micro_batches / self.n_windows


def eval_windows(tokens: np.ndarray, seq_len: int, max_windows: int = 0) -> np.ndarray:
    """Consecutive windows from the start of a held-out split -> (N, L + 1); the tail is dropped.

    If the split is shorter than one window, one shorter window is returned (never silently nothing).
    """
    n = (len(tokens) - 1) // seq_len
    if n == 0:
        if len(tokens) < 2:
            raise DataError(f"held-out split has {len(tokens)} tokens; it needs at least 2 to measure perplexity")
        return np.asarray(tokens, dtype=np.int32)[None]
    if max_windows:
        n = min(n, max_windows)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None]
    return np.asarray(tokens[idx], dtype=np.int32)


class Prefetcher:
    """Builds the next batches in a background thread so the data pipeline never stalls the step."""

    def __init__(self, make_batch, start: int, stop: int, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

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
        i, item = self._q.get()
        if i is None:
            raise item
        return i, item

    def close(self):
        self._stop.set()
        while not self._q.empty():
            self._q.get_nowait()
