"""Token shards: one flat ``{split}.bin`` per split of a corpus, memory-mapped, with a manifest.

Layout: ``DATA/shards/NAME/{train,valid,test}.bin`` + ``manifest.json`` holding sizes, sha256
hashes, the tokenizer's hash and the source spec. Each document is stored as ``ids + [eos]``; the
stream is then cut into fixed-length windows by :mod:`mlx_pn.data.batches`.

Every reuse checks sizes; the sha256 of each split is checked again whenever the file's size or mtime
differs from the last check (``verified.json``), so a truncated or corrupted shard is found with a
message naming it, and the data stage rebuilds it from the source text. Before writing, the free
disk space is checked against the worst case (one token per UTF-8 byte).
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from mlx_pn.data.sources import DataError, Document
from mlx_pn.data.tokenizer import Tokenizer
from mlx_pn.io import (DiskSpaceError, ForeignFolderError, atomic_folder, check_disk_space,  # noqa: F401
                       check_inside, check_replaceable, file_sha256, write_json_atomic)

MANIFEST = "manifest.json"
SHARDS = "shards"  # the marker kind of a shard set (mlx_pn.io.write_marker)
MAX_SOURCES = 1000  # per-source counts are kept in the manifest up to this many sources
VERIFIED = "verified.json"  # {split: [size, mtime_ns]} of the files whose sha256 was last checked good


def _stamps(folder: Path, splits) -> dict:
    out = {}
    for split in splits:
        st = (folder / f"{split}.bin").stat()
        out[split] = [st.st_size, st.st_mtime_ns]
    return out


def shard_bytes_needed(planned: dict[str, tuple[int, int]], itemsize: int) -> int:
    """Upper bound of the shard files' size from each split's (documents, UTF-8 bytes): byte fallback gives at most
    one token per UTF-8 byte, plus the dummy-prefix piece and the eos of every document."""
    return sum((n_bytes + 2 * n_docs) * itemsize for n_docs, n_bytes in planned.values()) + (1 << 20)


def _utf8_len(doc: Document) -> int:
    return len(doc.text.encode("utf-8"))


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def build_shards(name: str, splits: dict[str, list[Document]], tok: Tokenizer, folder: Path,
                 source: str, extra: dict | None = None, batch_docs: int = 256) -> dict:
    """Tokenize every split of documents in memory into ``folder/name``: :func:`write_shards` of them in order."""
    planned = {s: (len(docs), sum(map(_utf8_len, docs))) for s, docs in splits.items()}
    stream = ((s, d) for s, docs in splits.items() for d in docs)
    return write_shards(name, stream, planned, tok, folder, source, extra, batch_docs)


class _SourceCounts:
    """Documents, bytes and tokens per source (the id's first path part) and split, for the corpus report; given
    up past MAX_SOURCES sources (a folder of files without sub-folders has one per document)."""

    def __init__(self, splits):
        self.by_split: dict[str, dict] = {s: {} for s in splits}
        self.given_up = False

    def add(self, split: str, doc: Document, n_bytes: int, n_tokens: int) -> None:
        if self.given_up:
            return
        d = self.by_split[split]
        c = d.setdefault(doc.id.split("/", 1)[0], [0, 0, 0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + n_bytes, c[2] + n_tokens
        if len(d) > MAX_SOURCES:
            self.given_up, self.by_split = True, {}

    def result(self) -> dict | None:
        if self.given_up:
            return None
        out: dict[str, dict] = {}
        for split, d in self.by_split.items():  # split by split: the order the report lists them in
            for src, (docs, n_bytes, tokens) in d.items():
                s = out.setdefault(src, {"documents": 0, "bytes_utf8": 0, "tokens": {}})
                s["documents"] += docs
                s["bytes_utf8"] += n_bytes
                s["tokens"][split] = tokens
        return out


def write_shards(name: str, docs: Iterable[tuple[str, Document]], planned: dict[str, tuple[int, int]],
                 tok: Tokenizer, folder: Path, source: str, extra: dict | None = None, batch_docs: int = 256) -> dict:
    """Tokenize a stream of (split, document) into ``folder/name``: one ``{split}.bin`` per split of `planned`
    ({split: (documents, UTF-8 bytes)}: the disk-space check and the progress bar), each split's documents in
    stream order, written to a temp folder, then renamed. An existing ``folder/name`` is replaced only when it is a
    shard set (its marker, or a manifest of this module's)."""
    try:  # nothing is tokenized, let alone replaced, before the destination is known to be ours
        check_inside(folder / name, folder, f"the shards of '{name}'")
        if (folder / name).resolve() == Path(folder).resolve():
            raise ForeignFolderError(f"the shards of '{name}' would replace {folder} itself; use a plain name")
        check_replaceable(folder / name, SHARDS, _legacy_shards)
    except ForeignFolderError as e:
        raise DataError(str(e)) from None
    dtype = _dtype(tok.vocab_size)
    try:
        check_disk_space(folder, shard_bytes_needed(planned, dtype.itemsize), f"the token shards of '{name}'",
                         "free some space, or set data.dir to a folder on a larger disk")
    except DiskSpaceError as e:
        raise DataError(str(e)) from None
    manifest = {"name": name, "source": source, "tokenizer_sha256": tok.sha256, "vocab_size": tok.vocab_size,
                "dtype": dtype.name, "eos_id": tok.eos_id, **(extra or {}), "splits": {}}
    sources = _SourceCounts(planned)

    def write(tmp: Path):
        counts = {s: [0, 0, 0] for s in planned}  # documents, tokens, bytes
        files = {s: open(tmp / f"{s}.bin", "wb") for s in planned}
        # progress in bytes of text (documents vary 1000x in length: a count of them forecasts badly), tokens beside
        total = sum(b for _, b in planned.values())
        try:
            with tqdm(total=total, desc=f"tokenize {name}", unit="B", unit_scale=True, leave=False) as bar:
                for chunk in _batches(docs, batch_docs):
                    chunk_bytes = 0
                    for (split, doc), ids in zip(chunk, tok.encode_batch([d.text for _, d in chunk])):
                        arr = np.asarray(ids + [tok.eos_id], dtype=dtype)
                        files[split].write(arr.tobytes())
                        nb = _utf8_len(doc)
                        c = counts[split]
                        c[0], c[1], c[2] = c[0] + 1, c[1] + arr.size, c[2] + nb
                        sources.add(split, doc, nb, arr.size)
                        chunk_bytes += nb
                    bar.update(chunk_bytes)
                    bar.set_postfix(tokens=f"{sum(c[1] for c in counts.values()) / 1e6:.2f}M", refresh=False)
        finally:
            for f in files.values():
                f.close()
        for split, (n_docs, n_tokens, n_bytes) in counts.items():
            manifest["splits"][split] = {"documents": n_docs, "tokens": n_tokens, "bytes_utf8": n_bytes,
                                         "sha256": file_sha256(tmp / f"{split}.bin")}
        manifest["sources"] = sources.result()
        write_json_atomic(tmp / MANIFEST, manifest)
        write_json_atomic(tmp / VERIFIED, _stamps(tmp, manifest["splits"]))

    atomic_folder(folder / name, write, kind=SHARDS, legacy=_legacy_shards)
    return manifest


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _legacy_shards(folder: Path) -> bool:
    """A shard set written before folders carried markers: its manifest names it and holds its splits."""
    m = read_manifest(folder)
    return isinstance(m, dict) and m.get("name") == folder.name and "splits" in m and "tokenizer_sha256" in m


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged manifest means: rebuild


class Corpus:
    """Memory-mapped token splits of one corpus, checked against the tokenizer in use."""

    def __init__(self, folder: str | Path, tok: Tokenizer | None = None, verify_hashes: bool = False):
        self.folder = Path(folder)
        m = read_manifest(self.folder)
        if m is None:
            raise DataError(f"{self.folder}/{MANIFEST} is missing or damaged; rerun the data stage to rebuild it")
        self.manifest = m
        self.name = m["name"]
        if tok is not None and m["tokenizer_sha256"] != tok.sha256:
            raise DataError(
                f"{self.folder}: shards were tokenized with a different tokenizer ({m['tokenizer_sha256'][:12]}) "
                f"than {tok.folder}/spm.model ({tok.sha256[:12]}); delete {self.folder} to re-tokenize")
        for split, info in m["splits"].items():
            path = self.folder / f"{split}.bin"
            expected = info["tokens"] * np.dtype(m["dtype"]).itemsize
            if not path.exists() or path.stat().st_size != expected:
                raise DataError(f"{path}: missing or truncated (expected {expected} bytes); rerun the data stage")
        if verify_hashes:
            self.verify()

    def verify(self, force: bool = False) -> None:
        """Check every split's sha256 against the manifest (skipped for files unchanged since the last good
        check, unless `force`); raises DataError naming the damaged file."""
        m, stamp_path = self.manifest, self.folder / VERIFIED
        try:
            known = json.loads(stamp_path.read_text()) if stamp_path.exists() and not force else {}
        except (OSError, json.JSONDecodeError):
            known = {}
        now = _stamps(self.folder, m["splits"])
        changed = False
        for split, info in m["splits"].items():
            if known.get(split) == now[split]:
                continue
            path = self.folder / f"{split}.bin"
            if file_sha256(path) != info["sha256"]:
                raise DataError(f"{path}: corrupted (its sha256 differs from the one in {self.folder / MANIFEST}); "
                                f"the data stage rebuilds it from the source text, or delete {self.folder}")
            changed = True
        if changed or known != now:
            try:
                write_json_atomic(stamp_path, now)
            except OSError:
                pass  # a read-only data folder: verify again next time

    def tokens(self, split: str) -> np.ndarray:
        if split not in self.manifest["splits"]:
            raise DataError(f"{self.folder}: no split '{split}' (have {sorted(self.manifest['splits'])})")
        if self.manifest["splits"][split]["tokens"] == 0:
            return np.zeros(0, dtype=self.manifest["dtype"])
        return np.memmap(self.folder / f"{split}.bin", dtype=self.manifest["dtype"], mode="r")

    def document_lengths(self, split: str, chunk: int = 1 << 24) -> np.ndarray:
        """Tokens of each document of a split, eos included, in shard order: read from the shard's eos tokens
        in chunks (bounded memory), checked against the manifest's document count."""
        tokens, eos = self.tokens(split), self.manifest["eos_id"]
        ends = [np.flatnonzero(tokens[i:i + chunk] == eos) + i for i in range(0, len(tokens), chunk)]
        ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        if len(ends) != self.manifest["splits"][split]["documents"] or (len(tokens) and ends[-1] != len(tokens) - 1):
            raise DataError(f"{self.folder / (split + '.bin')}: {len(ends)} documents end in it but "
                            f"{self.folder / MANIFEST} says {self.manifest['splits'][split]['documents']}; "
                            f"delete {self.folder} and rerun the data stage")
        return np.diff(ends, prepend=-1)

    def bytes_utf8(self, split: str) -> int:
        return self.manifest["splits"][split]["bytes_utf8"]
