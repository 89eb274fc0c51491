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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlx_pn.data.sources import DataError, Document
from mlx_pn.data.tokenizer import Tokenizer
from mlx_pn.io import (DiskSpaceError, ForeignFolderError, atomic_folder, check_disk_space,  # noqa: F401
                       check_inside, check_replaceable, file_sha256, write_json_atomic)

MANIFEST = "manifest.json"
SHARDS = "shards"  # the marker kind of a shard set (mlx_pn.io.write_marker)
VERIFIED = "verified.json"  # {split: [size, mtime_ns]} of the files whose sha256 was last checked good


def _stamps(folder: Path, splits) -> dict:
    out = {}
    for split in splits:
        st = (folder / f"{split}.bin").stat()
        out[split] = [st.st_size, st.st_mtime_ns]
    return out


def shard_bytes_needed(splits: dict[str, list[Document]], itemsize: int, sizes: dict[str, list[int]] | None = None
                       ) -> int:
    """Upper bound of the shard files' size: byte fallback gives at most one token per UTF-8 byte, plus
    the dummy-prefix piece and the eos of every document. sizes: the documents' UTF-8 sizes, if known."""
    sizes = sizes or _utf8_sizes(splits)
    return sum((n + 2) * itemsize for ns in sizes.values() for n in ns) + (1 << 20)


def _utf8_sizes(splits: dict[str, list[Document]]) -> dict[str, list[int]]:
    return {split: [len(d.text.encode("utf-8")) for d in docs] for split, docs in splits.items()}


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def build_shards(name: str, splits: dict[str, list[Document]], tok: Tokenizer, folder: Path,
                 source: str, extra: dict | None = None, batch_docs: int = 256) -> dict:
    """Tokenize every split into ``folder/name`` (written to a temp folder, then renamed). An existing
    ``folder/name`` is replaced only when it is a shard set (its marker, or a manifest of this module's)."""
    try:  # nothing is tokenized, let alone replaced, before the destination is known to be ours
        check_inside(folder / name, folder, f"the shards of '{name}'")
        if (folder / name).resolve() == Path(folder).resolve():
            raise ForeignFolderError(f"the shards of '{name}' would replace {folder} itself; use a plain name")
        check_replaceable(folder / name, SHARDS, _legacy_shards)
    except ForeignFolderError as e:
        raise DataError(str(e)) from None
    dtype = _dtype(tok.vocab_size)
    sizes = _utf8_sizes(splits)
    try:
        check_disk_space(folder, shard_bytes_needed(splits, dtype.itemsize, sizes), f"the token shards of '{name}'",
                         "free some space, or set data.dir to a folder on a larger disk")
    except DiskSpaceError as e:
        raise DataError(str(e)) from None
    manifest = {"name": name, "source": source, "tokenizer_sha256": tok.sha256, "vocab_size": tok.vocab_size,
                "dtype": dtype.name, "eos_id": tok.eos_id, **(extra or {}), "splits": {}}

    def write(tmp: Path):
        # progress in UTF-8 bytes (what the encoding time follows; a document count forecast badly), tokens beside
        total_tokens = 0
        with tqdm(total=sum(map(sum, sizes.values())), desc=f"tokenize {name}", unit="B", unit_scale=True,
                  leave=False) as bar:
            for split, docs in splits.items():
                n_tokens = 0
                with open(tmp / f"{split}.bin", "wb") as f:
                    for i in range(0, len(docs), batch_docs):
                        chunk = docs[i:i + batch_docs]
                        flat: list[int] = []
                        for ids in tok.encode_batch([d.text for d in chunk]):
                            flat += ids
                            flat.append(tok.eos_id)
                        f.write(np.asarray(flat, dtype=dtype).tobytes())  # one array per batch, not per document
                        n_tokens += len(flat)
                        total_tokens += len(flat)
                        bar.set_postfix_str(f"{total_tokens:,} tokens", refresh=False)
                        bar.update(sum(sizes[split][i:i + batch_docs]))
                manifest["splits"][split] = {
                    "documents": len(docs), "tokens": n_tokens, "bytes_utf8": sum(sizes[split]),
                    "sha256": file_sha256(tmp / f"{split}.bin"),
                }
        write_json_atomic(tmp / MANIFEST, manifest)
        write_json_atomic(tmp / VERIFIED, _stamps(tmp, manifest["splits"]))

    atomic_folder(folder / name, write, kind=SHARDS, legacy=_legacy_shards)
    return manifest


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

    def bytes_utf8(self, split: str) -> int:
        return self.manifest["splits"][split]["bytes_utf8"]
