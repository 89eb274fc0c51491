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
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from mlx_pn.data import shard_parts
from mlx_pn.data.building import exclusive
from mlx_pn.data.sources import DataError, Document
from mlx_pn.data.tokenizer import Tokenizer
from mlx_pn.io import (DiskSpaceError, ForeignFolderError, atomic_folder, check_disk_space,  # noqa: F401
                       check_inside, check_replaceable, file_sha256, remove_tree, write_json_atomic)

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
                 source: str, extra: dict | None = None, batch_docs: int = 256, workers: int = 0, log=print) -> dict:
    """Tokenize every split of documents in memory into ``folder/name``: :func:`write_shards` of them in order."""
    planned = {s: (len(docs), sum(map(_utf8_len, docs))) for s, docs in splits.items()}
    stream = ((s, d) for s, docs in splits.items() for d in docs)
    return write_shards(name, stream, planned, tok, folder, source, extra, batch_docs, workers, log)


class _SourceCounts:
    """Documents, bytes and tokens per source (the id's first path part) and split, for the corpus report; given
    up past MAX_SOURCES sources (a folder of files without sub-folders has one per document)."""

    def __init__(self, splits):
        self.by_split: dict[str, dict] = {s: {} for s in splits}
        self.given_up = False

    def add(self, split: str, src: str, n_docs: int, n_bytes: int, n_tokens: int) -> None:
        if self.given_up:
            return
        d = self.by_split[split]
        c = d.setdefault(src, [0, 0, 0])
        c[0], c[1], c[2] = c[0] + n_docs, c[1] + n_bytes, c[2] + n_tokens
        if len(d) > MAX_SOURCES:
            self.given_up, self.by_split = True, {}

    def merge(self, part: dict | None) -> None:
        """Add one part's counts (its by_split, None when that part alone gave up), in stream order."""
        if part is None:
            self.given_up, self.by_split = True, {}
        for split, d in (part or {}).items():
            for src, (docs, n_bytes, tokens) in d.items():
                self.add(split, src, docs, n_bytes, tokens)

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
                 tok: Tokenizer, folder: Path, source: str, extra: dict | None = None, batch_docs: int = 256,
                 workers: int = 0, log=print) -> dict:
    """Tokenize a stream of (split, document) into ``folder/name``: one ``{split}.bin`` per split of `planned`
    ({split: (documents, UTF-8 bytes)}: the disk-space check and the progress bar), each split's documents in
    stream order. Written in resumable parts (mlx_pn.data.shard_parts: a killed run keeps its finished parts),
    then joined in a temp folder and renamed. An existing ``folder/name`` is replaced only when it is a shard set
    (its marker, or a manifest of this module's). workers: encoding threads (0: one per core); the same bytes for
    any number."""
    try:  # nothing is tokenized, let alone replaced, before the destination is known to be ours
        check_inside(folder / name, folder, f"the shards of '{name}'")
        if (folder / name).resolve() == Path(folder).resolve():
            raise ForeignFolderError(f"the shards of '{name}' would replace {folder} itself; use a plain name")
        check_replaceable(folder / name, SHARDS, _legacy_shards)
    except ForeignFolderError as e:
        raise DataError(str(e)) from None
    dtype = _dtype(tok.vocab_size)
    _check_space(folder, shard_bytes_needed(planned, dtype.itemsize), name)
    manifest = {"name": name, "source": source, "tokenizer_sha256": tok.sha256, "vocab_size": tok.vocab_size,
                "dtype": dtype.name, "eos_id": tok.eos_id, **(extra or {}), "splits": {}}
    with exclusive(Path(folder) / f".{name}.lock", log, f"the shards of {name}"):  # parts are shared: one writer
        done = _in_place(folder / name, manifest, tok)  # written meanwhile by the lock's last holder
        if done is not None:
            shard_parts.discard(folder, name)
            return done
        return _write_parts(name, docs, planned, tok, folder, manifest, dtype, batch_docs, workers, log)


def _in_place(path: Path, manifest: dict, tok: Tokenizer) -> dict | None:
    """The manifest of the shard set at `path` when it was made with these settings and its files are whole."""
    m = read_manifest(path)
    if m is None or {k: v for k, v in m.items() if k not in ("splits", "sources")} != \
            {k: v for k, v in manifest.items() if k != "splits"}:
        return None
    try:
        Corpus(path, tok, verify_hashes=True)
    except DataError:
        return None
    return m


def _write_parts(name, docs, planned, tok, folder, manifest, dtype, batch_docs, workers, log) -> dict:
    """write_shards' work, under its lock: the parts (resumed), then the shard set joined from them."""
    part_bytes = shard_parts.PART_BYTES
    parts = shard_parts.Parts(shard_parts.parts_folder(folder, name), {
        **{k: v for k, v in manifest.items() if k != "splits"}, "planned": planned, "part_bytes": part_bytes}, log)
    threads = workers or os.cpu_count() or 1
    total = sum(b for _, b in planned.values())
    kept = sum(info["bytes"] for info in parts.done.values())
    if parts.done:
        log(f"[data] {name}: resuming: {len(parts.done)} finished part(s), {kept / 1e6:,.1f} of {total / 1e6:,.1f} MB "
            f"of text, kept (sha256 checked) in {parts.folder}")
    infos, encoded, tokens, t0, c0 = [], 0, 0, time.perf_counter(), time.process_time()
    # progress in bytes of text (documents vary 1000x in length: a count of them forecasts badly), tokens beside;
    # kept parts count from the start, so the rate and the ETA are those of the text still to encode
    with tqdm(total=total, initial=kept, desc=f"tokenize {name}", unit="B", unit_scale=True, leave=False) as bar:
        stream = ((split, d, len(d.text.encode("utf-8"))) for split, d in docs)
        for i, chunk in enumerate(shard_parts.cut(stream, part_bytes)):
            info = parts.kept(i, len(chunk), sum(n for _, _, n in chunk))
            if info is None:
                atomic_folder(parts.path(i), lambda tmp: _write_part(tmp, chunk, tok, dtype, list(planned),
                                                                     batch_docs, threads, bar))
                info = json.loads((parts.path(i) / shard_parts.PART).read_text())
                encoded += info["bytes"]
            infos.append(info)
            tokens += sum(v[1] for v in info["splits"].values())
            bar.set_postfix(tokens=f"{tokens / 1e6:.2f}M", refresh=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0  # CPU: every thread, moved little by other load
    done = f", {kept / 1e6:,.1f} MB kept from the killed run" if kept else ""
    log(f"[data] {name}: {encoded / 1e6:,.1f} MB of text encoded in {secs:.1f} s ({encoded / 1e6 / max(secs, 1e-9):.2f} "
        f"MB/s, {threads} thread{'s' if threads > 1 else ''}, {cpu:.1f} CPU s){done}")
    sources = _SourceCounts(planned)
    for info in infos:
        sources.merge(info["sources"])
    _check_space(folder, sum(parts.bin(i, s).stat().st_size for i in range(len(infos)) for s in planned), name)

    def write(tmp: Path):
        for split in planned:
            sha = shard_parts.concatenate([parts.bin(i, split) for i in range(len(infos))], tmp / f"{split}.bin")
            n_docs, n_tokens, n_bytes = (sum(p["splits"][split][j] for p in infos) for j in range(3))
            manifest["splits"][split] = {"documents": n_docs, "tokens": n_tokens, "bytes_utf8": n_bytes, "sha256": sha}
        manifest["sources"] = sources.result()
        write_json_atomic(tmp / MANIFEST, manifest)
        write_json_atomic(tmp / VERIFIED, _stamps(tmp, manifest["splits"]))

    atomic_folder(folder / name, write, kind=SHARDS, legacy=_legacy_shards)
    remove_tree(parts.folder)
    return manifest


def _check_space(folder: Path, need: int, name: str) -> None:
    try:
        check_disk_space(folder, need, f"the token shards of '{name}'",
                         "free some space, or set data.dir to a folder on a larger disk")
    except DiskSpaceError as e:
        raise DataError(str(e)) from None


def _write_part(tmp: Path, chunk: list, tok: Tokenizer, dtype: np.dtype, splits: list[str], batch_docs: int,
                threads: int, bar) -> None:
    """One part: its documents encoded in batches (SentencePiece's threads), ids + [eos] appended per split."""
    counts = {s: [0, 0, 0] for s in splits}  # documents, tokens, bytes
    sources = _SourceCounts(splits)
    files = {s: open(tmp / f"{s}.bin", "wb") for s in splits}
    eos = tok.eos_id
    try:
        for b in range(0, len(chunk), batch_docs):
            batch = chunk[b:b + batch_docs]
            for (split, doc, nb), ids in zip(batch, tok.encode_batch([d.text for _, d, _ in batch], threads)):
                ids.append(eos)
                files[split].write(np.array(ids, dtype=dtype).tobytes())
                c = counts[split]
                c[0], c[1], c[2] = c[0] + 1, c[1] + len(ids), c[2] + nb
                sources.add(split, doc.id.split("/", 1)[0], 1, nb, len(ids))
            bar.update(sum(nb for _, _, nb in batch))
    finally:
        for f in files.values():
            f.close()
    info = {"documents": len(chunk), "bytes": sum(nb for _, _, nb in chunk), "itemsize": dtype.itemsize,
            "splits": {s: [*counts[s], file_sha256(tmp / f"{s}.bin")] for s in splits},
            "sources": None if sources.given_up else sources.by_split}
    (tmp / shard_parts.PART).write_text(json.dumps(info))


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
