"""How one corpus's documents are split, checked for duplicates and written to shards: streamed, or in memory.

A source of plain files, .jsonl, .parquet or a hub dataset is **streamed** (:class:`StreamedCorpus`): one pass
builds its on-disk duplicate index (mlx_pn.data.index) and the split of every document from it; later passes read
the source again for the tokenizer's sample, the leak report and the shards. Memory stays bounded whatever the
corpus's size, and the splits and shards are byte for byte the ones the in-memory path gives.

A source that holds an mlx-lm data folder (train/valid/test.jsonl, kept as given) is read **in memory**
(:class:`InMemoryCorpus`, mlx_pn.data.sources.load_splits): fine-tuning sets are small.

Both answer the same questions: the texts of a split, the duplicate report against a reference (the generic train
split), the shards, and the reference they make as the generic corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from mlx_pn.data import dedup
from mlx_pn.data.building import exclusive
from mlx_pn.data.index import DiskNearIndex, build_index, group, open_index, split_of
from mlx_pn.data.shards import build_shards, write_shards
from mlx_pn.data.sources import (SPLITS, DataError, Document, is_split_folder, load_splits, read_source,
                                 source_files, text_bytes)
from mlx_pn.io import atomic_folder, remove_tree, sweep_stale_temps, write_json_atomic

INDEX_LAYOUT = "bands+shingles-1"  # what the index folder holds (mlx_pn.data.index); another layout is rebuilt
HF_CACHE = "hf"  # DATA/hf: what `datasets` caches while streaming an hf: source (never ~/.cache)
INDEX = "index"  # DATA/index/NAME: a corpus's duplicate index, split codes and the settings they were made with


def plan_corpus(name: str, spec: str, field: str, cfg, fingerprint: str, log=print):
    """The corpus `spec` as a StreamedCorpus, or an InMemoryCorpus when it holds an mlx-lm data folder."""
    given = any(not p.startswith(("bundled:", "hf:")) and is_split_folder(Path(p).expanduser())
                for p in (s.strip() for s in spec.split(",")) if p)
    cls = InMemoryCorpus if given else StreamedCorpus
    return cls(name, spec, field, cfg, fingerprint, log)


class InMemoryCorpus:
    def __init__(self, name, spec, field, cfg, fingerprint, log=print):
        self.name, self.spec, self.workers, self.log = name, spec, cfg.data.workers, log
        self.splits, self.how = load_splits(spec, field, cfg.data.valid_fraction, cfg.data.test_fraction,
                                            cfg.data.max_docs, cache_dir=cfg.data_dir / HF_CACHE)

    def texts(self, split: str) -> Iterator[str]:
        return (d.text for d in self.splits[split])

    def leak_report(self, reference=None) -> dict:
        return dedup.leak_report(self.splits, reference)

    def write(self, tok, folder: Path, extra: dict) -> dict:
        """The shards; valid/test hold the first copy of each exact-duplicate group (dedup.HELD_OUT)."""
        splits = {s: [d for d, first in zip(docs, dedup.first_copies(dedup.exact_key(d.text) for d in docs)) if first]
                  if s in dedup.HELD_OUT else docs for s, docs in self.splits.items()}
        return build_shards(self.name, splits, tok, folder, self.spec, extra=extra, workers=self.workers,
                            log=self.log)

    def exact_keys(self) -> np.ndarray:
        """Every document's normalised-text hash (mlx_pn.data.dedup.exact_key), as 12-byte strings."""
        return np.array([dedup.exact_key(d.text) for docs in self.splits.values() for d in docs], dtype="S12")

    def held_out_copies(self) -> int:
        """Exact copies the valid/test shards leave out (beyond the first of each group)."""
        return sum(len(d) - sum(dedup.first_copies(dedup.exact_key(x.text) for x in d))
                   for s, d in self.splits.items() if s in dedup.HELD_OUT)

    def reference(self):
        """The train split as the index other corpora's held-out documents are checked against."""
        return dedup.NearIndex([d.text for d in self.splits["train"]])


class StreamedCorpus:
    """A corpus read from its source as a stream, split and de-duplicated through its on-disk index."""

    how = ""  # split by document, as the report says when nothing else is said

    def __init__(self, name, spec, field, cfg, fingerprint, log=print):
        self.name, self.spec, self.field, self.max_docs = name, spec, field, cfg.data.max_docs
        self.workers, self.log, self.cache = cfg.data.workers, log, cfg.data_dir / HF_CACHE
        folder = cfg.data_dir / INDEX / name
        settings = {"fingerprint": fingerprint, "max_docs": cfg.data.max_docs, "method": dedup.VERSION,
                    "index": INDEX_LAYOUT,
                    "valid_fraction": cfg.data.valid_fraction, "test_fraction": cfg.data.test_fraction}
        work = cfg.data_dir / INDEX / f".{name}.building"  # a build in progress: its resume point outlives a kill
        if _read_json(folder / "settings.json") != settings or work.exists():
            with exclusive(cfg.data_dir / INDEX / f".{name}.lock", log, f"the index of {name}"):
                if _read_json(folder / "settings.json") != settings:  # (the lock's last holder may have built it)
                    self._build(folder, work, settings, cfg, log)
                remove_tree(work)  # done (or left by a run killed between the rename and this removal)
                sweep_stale_temps(work.parent)  # and what a removal cut short by a kill left
        self.index = open_index(folder)
        self.code = np.load(folder / "code.npy")

    def _build(self, folder: Path, work: Path, settings: dict, cfg, log) -> None:
        """Index the source in `work` (resumable), then put the index and the split codes at `folder`."""
        name, spec, field = self.name, self.spec, self.field
        log(f"[data] {name}: reading {field} once to split it and find its duplicates (index in {folder})")
        if _read_json(work / "settings.json") != settings:
            remove_tree(work)  # another source or settings: its resume point is not this index's
        write_json_atomic(work / "settings.json", settings)
        t0, c0, workers = time.perf_counter(), _cpu(), _workers(spec, cfg)
        index = build_index(self._documents(), work, desc=f"index {name}", workers=workers, resume=True,
                            total_bytes=None if self.max_docs else text_bytes(spec, field), log=log)  # an ETA
        if not len(index):
            raise DataError(f"{field}: '{spec}' holds no non-empty documents; point it at real text")
        secs, mb = time.perf_counter() - t0, index.nbytes.sum() / 1e6
        log(f"[data] {name}: {mb:,.1f} MB of text ({len(index):,} documents) indexed in {secs:.1f} s "
            f"({mb / max(secs, 1e-9):.2f} MB/s, {workers} process{'es' if workers > 1 else ''}, "
            f"{_cpu() - c0:.1f} CPU s)")

        def build(tmp: Path):
            for f in INDEX_FILES:  # linked, not copied: the finished index is the build's files
                _link(work / f, tmp / f)
            code, _ = split_of(open_index(tmp), cfg.data.valid_fraction, cfg.data.test_fraction, desc=f"group {name}")
            np.save(tmp / "code.npy", code)
            (tmp / "settings.json").write_text(json.dumps(settings))

        atomic_folder(folder, build, kind=INDEX)

    def _documents(self) -> Iterator[Document]:
        return islice(read_source(self.spec, self.field, self.cache), self.max_docs or None)

    def _coded(self) -> Iterator[tuple[int, Document]]:
        """(split code, document) of every document, checked against the index: a source that changed since it
        was indexed is an error, not a silent mix of two versions."""
        n = 0
        for n, d in enumerate(self._documents(), 1):
            if n > len(self.code) or len(d.text.encode("utf-8")) != self.index.nbytes[n - 1]:
                break
            yield int(self.code[n - 1]), d
        else:
            if n == len(self.code):
                return
        raise DataError(f"{self.field}: '{self.spec}' changed while it was being read (document {n} differs from "
                        f"the index made a moment ago); rerun once the source is complete")

    def texts(self, split: str) -> Iterator[str]:
        c = SPLITS.index(split)
        return (d.text for code, d in self._coded() if code == c)

    def leak_report(self, reference=None) -> dict:
        """mlx_pn.data.dedup.leak_report of the final splits, from the index (no text, except to query
        `reference` with the held-out documents)."""
        order = np.concatenate([np.flatnonzero(self.code == c) for c in range(len(SPLITS))])
        groups = group(self.index, order, desc=f"duplicates {self.name}")
        pairs = np.unique(np.stack([groups.root, self.code[order].astype(np.int64)]), axis=1)
        roots, counts = np.unique(pairs[0], return_counts=True)
        keep = self._kept()
        out = {**groups.stats(), "groups_across_splits": int((counts > 1).sum()),
               "copies_left_out": {s: int(((self.code == SPLITS.index(s)) & ~keep).sum()) for s in dedup.HELD_OUT}}
        if reference is not None:
            from tqdm import tqdm

            found = {"valid": 0, "test": 0}
            with tqdm(total=int(self.index.nbytes.sum()), desc=f"overlap {self.name}", unit="B", unit_scale=True,
                      leave=False) as bar:  # a pass over the text: in bytes, as every other pass
                for n, (code, d) in enumerate(self._coded()):
                    if code and reference.contains(d.text):
                        found[SPLITS[code]] += 1
                    bar.update(int(self.index.nbytes[n]))
            out["in_generic_train"] = found
        return out

    def _kept(self) -> np.ndarray:
        """(N,) bool: the documents the shards hold: all of train; of valid and test, the first copy (source order) of
        each exact-duplicate group, so that evaluation counts each group once (dedup.HELD_OUT)."""
        keep = np.ones(len(self.code), dtype=bool)
        keys = np.ascontiguousarray(self.index.exact).view(np.dtype((np.void, 12))).ravel()
        for s in dedup.HELD_OUT:
            pos = np.flatnonzero(self.code == SPLITS.index(s))
            if len(pos):
                _, first = np.unique(keys[pos], return_index=True)  # the first occurrence of each key
                keep[pos] = False
                keep[pos[first]] = True
        return keep

    def held_out_copies(self) -> int:
        """Exact copies the valid/test shards leave out (beyond the first of each group)."""
        return int((~self._kept()).sum())

    def write(self, tok, folder: Path, extra: dict) -> dict:
        keep = self._kept()
        planned = {s: (int(((self.code == c) & keep).sum()), int(self.index.nbytes[(self.code == c) & keep].sum()))
                   for c, s in enumerate(SPLITS)}
        stream = ((SPLITS[code], d) for n, (code, d) in enumerate(self._coded()) if keep[n])
        return write_shards(self.name, stream, planned, tok, folder, self.spec, extra=extra, workers=self.workers,
                            log=self.log)

    def exact_keys(self) -> np.ndarray:
        """Every document's normalised-text hash (mlx_pn.data.dedup.exact_key), as 12-byte strings."""
        return np.ascontiguousarray(self.index.exact).view("S12").ravel()

    def reference(self) -> DiskNearIndex:
        return DiskNearIndex(self.index, np.flatnonzero(self.code == 0))


SMALL_SOURCE = 32e6  # bytes of files below which one process indexes faster than starting workers (~1 s each)


def _workers(spec: str, cfg) -> int:
    """data.workers, or one per core (0); a small local source gets one: spawning workers costs more than it saves
    (the result is the same for any number)."""
    if cfg.data.workers:
        return cfg.data.workers
    files = source_files(spec)
    if files is not None and sum(f.stat().st_size for f in files) < SMALL_SOURCE:
        return 1
    return os.cpu_count() or 1


INDEX_FILES = ("shingles.bin", *(f"band{b:02d}.bin" for b in range(dedup.BANDS)),
               *(f"{a}.npy" for a in ("hash", "nbytes", "exact", "sh_off")))


def _cpu() -> float:
    """CPU seconds of this process and of the worker processes it has waited for (the index's pool)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
