"""Exact and near-duplicate documents, found before the train/valid/test split so that a copy never sits on
both sides of it (mlx_pn.data.sources.split_documents), and the overlap of a held-out split with another
corpus's training text (a domain test document that is also generic training text).

Exact: the same normalised text (lower case, words only: punctuation and spacing do not count).
Near: MinHash over word 5-gram shingles (64 hash functions, LSH in 16 bands of 4 rows, so a pair at Jaccard
0.8 is a candidate with probability 1 - (1 - 0.8^4)^16 = 0.9998), every candidate then checked on its true Jaccard
(>= 0.8 by default). Work is linear in the words plus the candidate pairs: ~20k documents take seconds.
Everything is deterministic (crc32 word hashes, a fixed-seed hash family), independent of document order.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np

SHINGLE = 5  # words per shingle
THRESHOLD = 0.8  # shingle Jaccard at or above which two documents are near duplicates
NUM_PERM, BANDS = 64, 16  # MinHash size and LSH bands (rows per band = NUM_PERM // BANDS = 4)
VERSION = f"exact+minhash-{SHINGLE}gram-j{THRESHOLD}"  # in the shard manifest: another method means a rebuild
_WORD = re.compile(r"\w+")
_MAX_BUCKET_PAIRS = 64  # a bucket larger than this is checked against its first members only (boilerplate)

_rng = np.random.default_rng(20240201)
_A = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def exact_key(text: str, w: list[str] | None = None) -> bytes:
    """A hash of the normalised text (its lower-case words joined by one space; the raw text if it has none)."""
    w = words(text) if w is None else w
    return hashlib.sha1((" ".join(w) if w else text).encode()).digest()[:12]


class _Shingler:
    def __init__(self):
        self.cache: dict[str, int] = {}

    def shingles(self, text: str, w: list[str] | None = None) -> np.ndarray:
        """Sorted unique 64-bit hashes of the text's word 5-grams (a shorter text: one shingle, itself)."""
        w = words(text) if w is None else w
        cache = self.cache
        ids = list(map(cache.get, w))  # lookups in C: most words were seen before (a Python loop was the cost)
        if None in ids:
            for i, h in enumerate(ids):
                if h is None:
                    h = cache.get(w[i])
                    if h is None:
                        h = cache[w[i]] = zlib.crc32(w[i].encode()) + 1
                    ids[i] = h
        if len(ids) < SHINGLE:
            ids += [0] * (SHINGLE - len(ids))
        w = np.asarray(ids, dtype=np.uint64)
        n = len(w) - SHINGLE + 1
        with np.errstate(over="ignore"):  # arithmetic mod 2^64 on purpose
            s = w[:n].copy()
            for j in range(1, SHINGLE):
                s = s * np.uint64(1_000_003) + w[j:j + n]
        s.sort()  # np.unique's result, without its hash table (twice as slow on these arrays)
        keep = np.empty(n, dtype=bool)
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
        return s[keep]


def _signature(sh: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.empty(NUM_PERM, dtype=np.uint64)
        for i in range(0, len(sh), 4096):  # bounded memory on long documents
            part = ((sh[None, i:i + 4096] * _A[:, None] + _B[:, None]) >> np.uint64(32)).min(axis=1)
            out = part if i == 0 else np.minimum(out, part)
    return out


def _bands(sig: np.ndarray) -> list[bytes]:
    r = NUM_PERM // BANDS
    return [bytes([b]) + sig[b * r:(b + 1) * r].tobytes() for b in range(BANDS)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


@dataclass
class Groups:
    """root[i]: the representative of document i's duplicate group (i itself when it has no duplicate)."""
    root: np.ndarray
    exact: int  # documents that are an exact (normalised) copy of an earlier one
    near: int  # further documents joined to a group by near-duplicate shingles only

    def sizes(self) -> np.ndarray:
        return np.bincount(self.root, minlength=len(self.root))[self.root]

    def stats(self) -> dict:
        sizes = self.sizes()
        return {"method": VERSION, "grouped_documents": int((sizes > 1).sum()),
                "groups": int(len(set(self.root[sizes > 1].tolist()))),
                "exact_duplicates": self.exact, "near_duplicates": self.near}


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent: list[int], a: int, b: int) -> bool:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra == rb:
        return False
    lo, hi = min(ra, rb), max(ra, rb)
    parent[hi] = lo
    return True


def duplicate_groups(texts: list[str], threshold: float = THRESHOLD) -> Groups:
    """Group exact and near-duplicate texts (union-find over exact keys, then verified LSH candidates)."""
    n = len(texts)
    parent = list(range(n))
    first: dict[bytes, int] = {}
    exact, shingler, sh = 0, _Shingler(), {}
    for i, t in enumerate(texts):
        w = words(t)
        j = first.setdefault(exact_key(t, w), i)
        if j != i:
            exact += _union(parent, j, i)
        else:  # one member per exact class goes on to the near-duplicate search
            sh[i] = shingler.shingles(t, w)
    reps = list(sh)
    buckets: dict[bytes, list[int]] = {}
    for i in reps:
        for key in _bands(_signature(sh[i])):
            buckets.setdefault(key, []).append(i)
    near, checked = 0, set()
    for members in buckets.values():
        if len(members) < 2:
            continue
        pairs = [(a, b) for x, a in enumerate(members) for b in members[x + 1:]]
        if len(pairs) > _MAX_BUCKET_PAIRS:
            pairs = [(a, b) for a in members[:4] for b in members if a < b]
        for a, b in pairs:
            if (a, b) in checked:
                continue
            checked.add((a, b))
            if _find(parent, a) != _find(parent, b) and jaccard(sh[a], sh[b]) >= threshold:
                near += _union(parent, a, b)
    root = np.fromiter((_find(parent, i) for i in range(n)), dtype=np.int64, count=n)
    return Groups(root, exact, near)


class NearIndex:
    """Reference texts (e.g. the generic train split), queried for exact or near copies of other texts."""

    def __init__(self, texts: list[str], threshold: float = THRESHOLD):
        self.threshold, self._shingler = threshold, _Shingler()
        self.keys = {exact_key(t) for t in texts}
        self.sh: list[np.ndarray] = []
        self.buckets: dict[bytes, list[int]] = {}
        for t in texts:
            s = self._shingler.shingles(t)
            for key in _bands(_signature(s)):
                self.buckets.setdefault(key, []).append(len(self.sh))
            self.sh.append(s)

    def contains(self, text: str) -> bool:
        if exact_key(text) in self.keys:
            return True
        s = self._shingler.shingles(text)
        seen = set()
        for key in _bands(_signature(s)):
            for j in self.buckets.get(key, [])[:_MAX_BUCKET_PAIRS]:
                if j not in seen:
                    seen.add(j)
                    if jaccard(s, self.sh[j]) >= self.threshold:
                        return True
        return False


HELD_OUT = ("valid", "test")  # their shards hold one copy per exact-duplicate group: each is evaluated once


def first_copies(keys) -> list[bool]:
    """Per key (exact_key of each document, in split order): True for the first of its exact-duplicate group."""
    seen: set = set()
    out = []
    for k in keys:
        out.append(k not in seen)
        seen.add(k)
    return out


def leak_report(splits: dict, reference: NearIndex | None = None) -> dict:
    """What the data manifest says about duplicates in a corpus's final splits (however they were made):
    the grouping's counts, how many groups straddle two splits (0 when the split grouped them; a source with
    its own train/valid/test files can have more), and, given a reference index (the generic train split),
    how many valid/test documents also sit, exactly or nearly, in the reference; copies_left_out: the exact copies
    beyond the first of their group that the valid/test shards leave out (the held-out split's documents as split,
    before they are)."""
    names = [s for s in ("train", "valid", "test") if s in splits]
    texts, where = [], []
    for s in names:
        texts += [d.text for d in splits[s]]
        where += [s] * len(splits[s])
    groups = duplicate_groups(texts)
    seen: dict[int, set] = {}
    for g, s in zip(groups.root.tolist(), where):
        seen.setdefault(g, set()).add(s)
    out = {**groups.stats(), "groups_across_splits": sum(len(v) > 1 for v in seen.values()),
           "copies_left_out": {s: len(splits[s]) - len({exact_key(d.text) for d in splits[s]})
                               for s in HELD_OUT if s in splits}}
    if reference is not None:
        out["in_generic_train"] = {s: sum(reference.contains(d.text) for d in splits[s])
                                   for s in ("valid", "test") if s in splits}
    return out
