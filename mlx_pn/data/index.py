"""The duplicate index of one corpus, on disk: what splitting and de-duplicating need of every document, without
the documents.

One streamed pass over a source (:func:`build_index`) keeps, per document, its split hash, its byte length, its
exact key, its MinHash signature (a file per LSH band) and its shingles (appended to a file); nothing else of the
text. From it:
:func:`group` gives the duplicate groups of mlx_pn.data.dedup.duplicate_groups for the documents in any order,
:func:`split_of` the split of every document as mlx_pn.data.sources.split_documents gives it, and
:class:`DiskNearIndex` answers NearIndex.contains against the corpus's train split. Memory is a few arrays of one
number per document (8-12 bytes each) and one band's keys at a time (32 bytes per document); the text, the
signatures and the shingles stay on disk and are read, not memory-mapped (a map's touched pages stay counted in
the process's memory), so a corpus of any size in bytes fits.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from itertools import islice
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from mlx_pn.data import dedup
from mlx_pn.data.sources import Document
from mlx_pn.io import write_json_atomic

_ROWS = dedup.NUM_PERM // dedup.BANDS  # signature rows per LSH band
_SHINGLER_WORDS = 1 << 20  # the word-hash cache is cleared past this many words (it is only a speed-up)


def split_hash(d: Document) -> float:
    """The document's place in [0, 1) that picks its split (as mlx_pn.data.sources.split_documents)."""
    return int.from_bytes(hashlib.sha1(f"{d.id}\0{d.text[:256]}".encode()).digest()[:8], "big") / 2**64


@dataclass
class CorpusIndex:
    """Per document i (source order): hash[i], nbytes[i], exact[i] (12 bytes) in memory; on disk, its MinHash
    signature band by band (bandBB.bin: _ROWS uint64 a document) and its shingles (shingles.bin from sh_off[i]).

    Nothing on disk is memory-mapped: the pages of a map stay counted in the process's memory once touched (the
    grouping touches most of shingles.bin, which is larger than the text), so bands are read whole, one at a time
    (32 bytes a document), and shingles by offset."""
    folder: Path
    hash: np.ndarray
    nbytes: np.ndarray
    exact: np.ndarray
    sh_off: np.ndarray

    def __len__(self) -> int:
        return len(self.hash)

    def band(self, b: int) -> np.ndarray:
        """(N, _ROWS) uint64: band b of every document's signature."""
        return np.fromfile(self.folder / f"band{b:02d}.bin", dtype=np.uint64).reshape(-1, _ROWS)

    def shingles(self, i: int) -> np.ndarray:
        lo, hi = int(self.sh_off[i]), int(self.sh_off[i + 1])
        if not hasattr(self, "_fd"):
            self._fd = os.open(self.folder / "shingles.bin", os.O_RDONLY)
        return np.frombuffer(os.pread(self._fd, (hi - lo) * 8, lo * 8), dtype=np.uint64)

    def __del__(self):
        if hasattr(self, "_fd"):
            os.close(self._fd)


def _index_entry(text: str, doc_id: str, shingler) -> tuple[float, int, bytes, bytes, bytes]:
    """What the index keeps of one document: (split hash, UTF-8 bytes, exact key, signature, shingles)."""
    w = dedup.words(text)
    sh = shingler.shingles(text, w)
    if len(shingler.cache) > _SHINGLER_WORDS:
        shingler.cache.clear()
    return (split_hash(Document(doc_id, text)), len(text.encode("utf-8")), dedup.exact_key(text, w),
            dedup._signature(sh).tobytes(), sh.tobytes())


_worker_shingler = None


def _index_chunk(docs: list[tuple[str, str]]) -> list[tuple]:
    """A worker process's share: index entries of (id, text) pairs, in order."""
    global _worker_shingler
    if _worker_shingler is None:
        _worker_shingler = dedup._Shingler()
    return [_index_entry(text, doc_id, _worker_shingler) for doc_id, text in docs]


def _entries(docs: Iterable[Document], workers: int, chunk_docs: int = 64) -> Iterator[tuple]:
    """Index entries of `docs` in order: computed here (workers <= 1) or by `workers` processes, with at most
    4 chunks per worker in flight (the reader never runs ahead of them by more: bounded memory)."""
    if workers <= 1:
        shingler = dedup._Shingler()
        for d in docs:
            yield _index_entry(d.text, d.id, shingler)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    it = iter(docs)
    # spawn, not fork: a process that has MLX (and Metal or CUDA) loaded must not fork
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        pending: deque = deque()
        while True:
            while len(pending) < 4 * workers:
                chunk = [(d.id, d.text) for d in islice(it, chunk_docs)]
                if not chunk:
                    break
                pending.append(pool.submit(_index_chunk, chunk))
            if not pending:
                return
            yield from pending.popleft().result()


CHECKPOINT_BYTES = 256_000_000  # text between two resume points of a resumable index build (~25 s on 2 cores)
PROGRESS = "progress.json"  # a resumable build's last resume point: documents, bytes and every file's size then
_RAW = ("hash.raw", "nbytes.raw", "exact.raw", "sh_off.raw")  # the per-document arrays, appended at each resume point


def build_index(docs: Iterable[Document], folder: Path, desc: str = "index", total_bytes: int | None = None,
                workers: int = 1, resume: bool = False, log=print) -> CorpusIndex:
    """One streamed pass over `docs` -> its index in `folder` (signatures and shingles on disk); the same files
    for any number of `workers`. resume: `folder` outlives a killed run: every CHECKPOINT_BYTES of text its files are
    flushed and their sizes recorded (progress.json, a durable write), and a rerun cuts them back there and skips
    the documents already indexed (read, not indexed), so the files end byte for byte as one pass writes them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["shingles.bin"] + [f"band{b:02d}.bin" for b in range(dedup.BANDS)] + list(_RAW)
    state = _progress(folder, names) if resume else None
    if state is None:
        (folder / PROGRESS).unlink(missing_ok=True)  # from zero: an older resume point no longer describes the files
        for name in names:
            open(folder / name, "wb").close()
        done, done_bytes = 0, 0
    else:
        done, done_bytes = state["documents"], state["bytes"]
        log(f"[data] {desc}: resuming at document {done:,} ({done_bytes / 1e6:,.1f} MB of text already indexed, "
            f"{folder / PROGRESS})")
    raw = {n: (folder / n).read_bytes() for n in _RAW} if state else {}
    hashes, lengths = array("d", raw.get("hash.raw", b"")), array("q", raw.get("nbytes.raw", b""))
    exact = bytearray(raw.get("exact.raw", b""))  # 8-12 bytes a document, not a Python object
    offsets = array("q", [0]) + array("q", raw.get("sh_off.raw", b""))
    del raw
    row = _ROWS * 8  # bytes of one band of one signature
    files = {n: open(folder / n, "ab") for n in names}
    bands = [files[f"band{b:02d}.bin"] for b in range(dedup.BANDS)]
    fsh, saved, since = files["shingles.bin"], done, 0
    docs = iter(docs)
    for _ in islice(docs, done):  # indexed before the kill: read past them
        pass
    try:
        with tqdm(total=total_bytes, initial=done_bytes, desc=desc, unit="B", unit_scale=True, leave=False) as bar:
            for h, n, key, sig, sh in _entries(docs, workers):
                exact += key
                fsh.write(sh)
                for b, f in enumerate(bands):
                    f.write(sig[b * row:(b + 1) * row])
                offsets.append(offsets[-1] + len(sh) // 8)
                hashes.append(h)
                lengths.append(n)
                bar.update(n)
                since += n
                if resume and since >= CHECKPOINT_BYTES:
                    saved, since = _checkpoint(folder, files, saved, hashes, lengths, exact, offsets), 0
            if bar.total is not None and bar.n != bar.total:
                bar.total = bar.n  # the total was an estimate from the files' sizes
    finally:
        for f in files.values():
            f.close()
    arrays = {"hash": np.frombuffer(hashes, dtype=np.float64), "nbytes": np.frombuffer(lengths, dtype=np.int64),
              "exact": np.frombuffer(bytes(exact), dtype=np.uint8).reshape(-1, 12),
              "sh_off": np.frombuffer(offsets, dtype=np.int64)}
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
    for name in _RAW if not resume else ():
        (folder / name).unlink()
    return open_index(folder)


def _checkpoint(folder: Path, files: dict, saved: int, hashes, lengths, exact, offsets) -> int:
    """Append the documents indexed since the last resume point to the .raw files, flush every file to disk, then
    record their sizes (progress.json, written last: the files hold at least what it says) -> documents saved."""
    n = len(hashes)
    files["hash.raw"].write(hashes[saved:n].tobytes())
    files["nbytes.raw"].write(lengths[saved:n].tobytes())
    files["exact.raw"].write(bytes(exact[saved * 12:n * 12]))
    files["sh_off.raw"].write(offsets[saved + 1:n + 1].tobytes())
    for f in files.values():
        f.flush()
        os.fsync(f.fileno())
    sizes = {name: f.tell() for name, f in files.items()}
    write_json_atomic(folder / PROGRESS, {"documents": n, "bytes": int(sum(lengths)), "sizes": sizes})
    return n


def _progress(folder: Path, names: list[str]) -> dict | None:
    """The last resume point of a killed build in `folder`, its files cut back to it; None: start from zero."""
    try:
        state = json.loads((folder / PROGRESS).read_text())
        sizes = state["sizes"]
        if sorted(sizes) != sorted(names) or any((folder / n).stat().st_size < sizes[n] for n in names):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for n in names:
        os.truncate(folder / n, sizes[n])
    return state


def open_index(folder: Path) -> CorpusIndex:
    folder = Path(folder)
    a = {n: np.load(folder / f"{n}.npy") for n in ("hash", "nbytes", "exact", "sh_off")}
    return CorpusIndex(folder, a["hash"], a["nbytes"], a["exact"], a["sh_off"])


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def _band_buckets(keys: np.ndarray, members: np.ndarray) -> Iterable[np.ndarray]:
    """Rows of `keys` (m, _ROWS) uint64 that are equal, as arrays of `members` (ascending: the order the
    in-memory buckets list them in)."""
    order = np.lexsort((members,) + tuple(keys[:, j] for j in reversed(range(keys.shape[1]))))
    k = keys[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (k[1:] != k[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(order))
    for s, e in zip(starts, ends):
        if e - s >= 2:
            yield members[order[s:e]]


def group(index: CorpusIndex, order: np.ndarray | None = None, threshold: float = dedup.THRESHOLD,
          desc: str | None = None) -> dedup.Groups:
    """mlx_pn.data.dedup.duplicate_groups of the documents index[order] (default: source order), from the index:
    the same groups (roots are positions in `order`), the same exact/near counts. desc: a progress bar over the LSH
    bands (equal work each: an honest ETA for a corpus whose grouping takes a while)."""
    order = np.arange(len(index)) if order is None else np.asarray(order, dtype=np.int64)
    n = len(order)
    parent = np.arange(n, dtype=np.int64)
    # exact classes: each position joins the first position with its key
    keys = np.ascontiguousarray(index.exact[order]).view(np.dtype((np.void, 12))).ravel()
    _, first_of_class, cls = np.unique(keys, return_index=True, return_inverse=True)
    # np.unique's return_index is the first occurrence in `keys`, i.e. the lowest position: the class's rep
    first = first_of_class[cls.ravel()]
    parent[:] = first
    exact = int((first != np.arange(n)).sum())
    reps = np.flatnonzero(first == np.arange(n))
    near, checked = 0, set()
    for b in tqdm(range(dedup.BANDS), desc=desc, unit="band", leave=False, disable=desc is None):
        band = index.band(b)[order[reps]]  # (reps, rows)
        for members in _band_buckets(band, reps):
            m = members.tolist()
            pairs = [(a, c) for x, a in enumerate(m) for c in m[x + 1:]]
            if len(pairs) > dedup._MAX_BUCKET_PAIRS:
                pairs = [(a, c) for a in m[:4] for c in m if a < c]
            for a, c in pairs:
                if (a, c) in checked:
                    continue
                checked.add((a, c))
                ra, rc = _find(parent, a), _find(parent, c)
                if ra != rc and dedup.jaccard(index.shingles(order[a]), index.shingles(order[c])) >= threshold:
                    parent[max(ra, rc)] = min(ra, rc)
                    near += 1
    root = np.fromiter((_find(parent, i) for i in range(n)), dtype=np.int64, count=n)
    return dedup.Groups(root, exact, near)


def split_of(index: CorpusIndex, valid_fraction: float, test_fraction: float, report: dict | None = None,
             desc: str | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """(split code per document: 0 train, 1 valid, 2 test; moved: {split name: document index} of the documents
    a tiny corpus moves into an empty held-out split, appended at that split's end), as split_documents."""
    groups = group(index, desc=desc)
    h = index.hash

    def pick(x: np.ndarray) -> np.ndarray:
        return np.where(x < valid_fraction, 1, np.where(x < valid_fraction + test_fraction, 2, 0))

    low = np.full(len(h), np.inf)
    np.minimum.at(low, groups.root, h)
    code = pick(low[groups.root]) if len(h) else np.zeros(0, dtype=np.int64)
    moved: dict[str, int] = {}
    alone = groups.sizes() == 1
    for c, name, frac in ((1, "valid", valid_fraction), (2, "test", test_fraction)):
        train = np.flatnonzero(code == 0)
        if frac > 0 and not (code == c).any() and len(train) > 2:
            cand = train[alone[train]]
            if len(cand):
                code[cand[-1]] = c
                moved[name] = int(cand[-1])
    if report is not None:
        report.update(groups.stats(), moved_by_grouping=int((code != pick(h)).sum()) - len(moved))
    return code.astype(np.int8), moved


def _save_replacing(path: Path, a: np.ndarray) -> None:
    """np.save by a temp file renamed over `path`: another process (a second launch on the same run) may have
    the old file memory-mapped, and overwriting it in place would truncate it under that map (SIGBUS)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, a)
    os.replace(tmp, path)


class DiskNearIndex:
    """mlx_pn.data.dedup.NearIndex over the documents `members` (positions in the index, in their split's order),
    answered from the on-disk index: .contains(text) is True when the text is an exact or near copy of one."""

    def __init__(self, index: CorpusIndex, members: np.ndarray, threshold: float = dedup.THRESHOLD):
        self.index, self.threshold, self._shingler = index, threshold, dedup._Shingler()
        self.members = np.asarray(members, dtype=np.int64)
        keys = np.ascontiguousarray(index.exact[self.members]).view(np.dtype((np.void, 12))).ravel()
        self.keys = np.sort(keys)
        # per band: the members' band rows sorted, and their positions in `members` in that order; written beside
        # the index and memory-mapped (16 bands x 40 bytes a document would not stay small in memory)
        self.bands = []
        pos = np.arange(len(self.members))
        for b in range(dedup.BANDS):
            k = index.band(b)[self.members]
            order = np.lexsort((pos,) + tuple(k[:, j] for j in reversed(range(_ROWS))))
            keys_path, pos_path = (index.folder / f"near-band{b:02d}-{part}.npy" for part in ("keys", "pos"))
            _save_replacing(keys_path, k[order])
            _save_replacing(pos_path, pos[order])
            del k, order
            self.bands.append((np.load(keys_path, mmap_mode="r"), np.load(pos_path, mmap_mode="r")))

    def _has_key(self, key: bytes) -> bool:
        k = np.frombuffer(key, dtype=np.dtype((np.void, 12)))[0]
        i = np.searchsorted(self.keys, k)
        return bool(i < len(self.keys) and self.keys[i] == k)

    def contains(self, text: str) -> bool:
        if self._has_key(dedup.exact_key(text)):
            return True
        s = self._shingler.shingles(text)
        sig = dedup._signature(s)
        seen = set()
        for b, (keys, pos) in enumerate(self.bands):
            q = sig[b * _ROWS:(b + 1) * _ROWS]
            lo, hi = 0, len(keys)  # the rows equal to q: narrow column by column (keys are sorted by them)
            for j in range(_ROWS):
                col = keys[lo:hi, j]
                lo, hi = lo + int(np.searchsorted(col, q[j], "left")), lo + int(np.searchsorted(col, q[j], "right"))
                if lo >= hi:
                    break
            for p in pos[lo:hi][:dedup._MAX_BUCKET_PAIRS].tolist():
                if p not in seen:
                    seen.add(p)
                    if dedup.jaccard(s, self.index.shingles(self.members[p])) >= self.threshold:
                        return True
        return False
