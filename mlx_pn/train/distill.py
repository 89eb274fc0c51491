"""Distillation (slm-d): the student learns from the domain tokens and from a fine-tuned teacher.

loss = (1 - alpha) * CE(student, next token) + alpha * T^2 * KL(p_T || q_T)

p_T: the teacher's next-token distribution at temperature T, kept as its top-k log-probabilities (the
compact form, both live and on disk) plus the mass of all other tokens as one "rest" bucket; q_T: the
student's at the same temperature over the same k + 1 outcomes. (Renormalising the top-k instead would
ask the student to put all its mass on k tokens: with a soft T=2 teacher over a large vocabulary the top-k
hold a fraction of it, and that target made fine-tuning worse in our tiny runs.) T^2 keeps the gradient
scale of the soft term independent of T (Hinton et al.).

Teacher outputs come either from a disk cache (every domain training window run through the teacher once,
stored as top-k ids + fp16 log-probs in resumable parts) or live (the teacher runs inside every step).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tqdm import tqdm

from mlx_pn.data.batches import PackedBatches
from mlx_pn.io import atomic_file, write_json_atomic

PART_WINDOWS = 256  # windows per cache part: the unit of resumption


def teacher_topk(teacher, x: mx.array, k: int, temperature: float) -> tuple[mx.array, mx.array]:
    """x (B, L) -> ids (B, L, k) int32 and log-probs (B, L, k) float32 of the teacher's top-k at temperature T
    (normalised over the whole vocabulary: the rest of the mass is 1 - sum of their probabilities)."""
    logits = teacher(x).astype(mx.float32) / temperature  # (B, L, V)
    ids = mx.argpartition(-logits, kth=k - 1, axis=-1)[..., :k]
    top = mx.take_along_axis(logits, ids, axis=-1)
    return ids.astype(mx.int32), top - mx.logsumexp(logits, axis=-1, keepdims=True)


def distill_loss(model, x: mx.array, y: mx.array, ids: mx.array, logp: mx.array, *, alpha: float,
                 temperature: float) -> mx.array:
    """x, y (B, L); ids, logp (B, L, k) the teacher's top-k -> scalar loss."""
    logits = model(x).astype(mx.float32)  # (B, L, V)
    ce = nn.losses.cross_entropy(logits, y, reduction="mean")
    if alpha == 0:
        return ce
    s = logits / temperature
    logq = mx.take_along_axis(s, ids, axis=-1) - mx.logsumexp(s, axis=-1, keepdims=True)  # (B, L, k)
    logp = logp.astype(mx.float32)
    p = mx.exp(logp)
    p_rest = mx.maximum(1.0 - p.sum(axis=-1), 1e-7)  # the teacher's mass outside its top-k
    q_rest = mx.maximum(1.0 - mx.exp(logq).sum(axis=-1), 1e-7)
    kl = mx.sum(p * (logp - logq), axis=-1) + p_rest * (mx.log(p_rest) - mx.log(q_rest))
    return (1 - alpha) * ce + alpha * temperature**2 * kl.mean()


def live_distill_loss(teacher, k: int, alpha: float, temperature: float):
    """loss_fn(model, x, y) running the teacher inside the step (no gradient reaches it)."""

    def loss(model, x, y):
        ids, logp = teacher_topk(teacher, x, k, temperature)
        return distill_loss(model, x, y, mx.stop_gradient(ids), mx.stop_gradient(logp), alpha=alpha,
                            temperature=temperature)

    return loss


def cached_distill_loss(alpha: float, temperature: float):
    """loss_fn(model, x, y, ids, logp) for batches from TeacherCacheBatches."""
    return partial(distill_loss, alpha=alpha, temperature=temperature)


class TeacherCache:
    """Top-k teacher outputs for every training window of a domain, in parts of PART_WINDOWS windows.

    folder/part_XXXXX.ids.npy (n, L, k) int32|uint16, .logp.npy (n, L, k) float16; manifest.json is written
    last and names the teacher, k, T and the window count, so a cache made by another teacher is rebuilt.
    """

    def __init__(self, folder: Path, n_windows: int, seq_len: int, k: int):
        self.folder, self.n, self.seq_len, self.k = Path(folder), n_windows, seq_len, k
        self._parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _part_paths(self, p: int) -> tuple[Path, Path]:
        return self.folder / f"part_{p:05d}.ids.npy", self.folder / f"part_{p:05d}.logp.npy"

    def build(self, teacher, tokens: np.ndarray, temperature: float, key: dict, batch_size: int = 16,
              log=print) -> float:
        """Run the teacher over every window (skipping finished parts) -> seconds spent."""
        import time

        import json

        manifest = self.folder / "manifest.json"
        if manifest.exists():
            if json.loads(manifest.read_text()).get("key") == key:
                return 0.0
            for f in self.folder.glob("part_*.npy"):  # another teacher / k / T: start over
                f.unlink()
            manifest.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        t0, L = time.perf_counter(), self.seq_len
        n_parts = -(-self.n // PART_WINDOWS)
        id_dtype = np.uint16 if teacher.args.vocab_size <= 65536 else np.int32
        for p in tqdm(range(n_parts), desc="teacher cache", unit="part", leave=False):
            ids_path, logp_path = self._part_paths(p)
            if ids_path.exists() and logp_path.exists():
                continue
            lo, hi = p * PART_WINDOWS, min(self.n, (p + 1) * PART_WINDOWS)
            ids_out = np.empty((hi - lo, L, self.k), dtype=id_dtype)
            logp_out = np.empty((hi - lo, L, self.k), dtype=np.float16)
            for i in range(lo, hi, batch_size):
                j = min(hi, i + batch_size)
                w = np.stack([tokens[q * L: q * L + L] for q in range(i, j)])
                ids, logp = teacher_topk(teacher, mx.array(w), self.k, temperature)
                mx.eval(ids, logp)
                ids_out[i - lo:j - lo] = np.array(ids).astype(id_dtype)
                logp_out[i - lo:j - lo] = np.array(logp).astype(np.float16)
            atomic_file(logp_path, lambda f, a=logp_out: np.save(f, a))
            atomic_file(ids_path, lambda f, a=ids_out: np.save(f, a))  # ids last: both exist = part done
        write_json_atomic(self.folder / "manifest.json", {"key": key, "windows": self.n, "k": self.k,
                                                          "seq_len": L, "part_windows": PART_WINDOWS})
        return time.perf_counter() - t0

    def _part(self, p: int):
        if p not in self._parts:
            ids_path, logp_path = self._part_paths(p)
            self._parts[p] = (np.load(ids_path, mmap_mode="r"), np.load(logp_path, mmap_mode="r"))
        return self._parts[p]

    def lookup(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window ids (N,) -> ids (N, L, k) int32, log-probs (N, L, k) float16."""
        ids = np.empty((len(windows), self.seq_len, self.k), dtype=np.int32)
        logp = np.empty((len(windows), self.seq_len, self.k), dtype=np.float16)
        for j, w in enumerate(windows):
            a, b = self._part(int(w) // PART_WINDOWS)
            ids[j], logp[j] = a[int(w) % PART_WINDOWS], b[int(w) % PART_WINDOWS]
        return ids, logp


class TeacherCacheBatches:
    """PackedBatches plus the cached teacher top-k of the same windows: batch(step, A) ->
    (tokens (A, B, L + 1), ids (A, B, L, k), log-probs (A, B, L, k))."""

    def __init__(self, base: PackedBatches, cache: TeacherCache):
        self.base, self.cache = base, cache
        self.n_windows = base.n_windows

    def batch(self, step: int, micro_batches: int = 1):
        per_step = self.base.batch_size * micro_batches
        windows = self.base.window_ids(step * per_step, per_step)
        tokens = self.base.batch(step, micro_batches)
        ids, logp = self.cache.lookup(windows)
        shape = (micro_batches, self.base.batch_size, self.base.seq_len, self.cache.k)
        return tokens, ids.reshape(shape), logp.reshape(shape)

    def epochs(self, steps: int, micro_batches: int = 1) -> float:
        return self.base.epochs(steps, micro_batches)
