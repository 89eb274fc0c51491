"""Resumable shard writing: a shard set is tokenized in parts, so a prepare killed mid-corpus resumes at its last
finished part instead of from zero.

The (split, document) stream is cut into consecutive parts of at least PART_BYTES of UTF-8 text (a part ends after
the document that reaches it: the cut depends on the stream only, so a rerun cuts it the same way). Part i is the
atomic folder ``DATA/shards/.NAME.parts/NNNNN/`` with one ``{split}.bin`` per split and ``part.json`` (its
documents, bytes, per-split counts and sha256, per-source counts). The parts folder carries ``meta.json``, the
settings it was made with; other settings (another source, tokenizer or split) start it over. A rerun keeps every
part whose files still match their sha256 and writes only the others; the final ``{split}.bin`` is the parts
concatenated in order, byte for byte what one uninterrupted pass writes. The folder is removed once the shard set
is in place. Its dot-name never collides with a corpus (names cannot start with a dot).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlx_pn.io import file_sha256, remove_tree, sweep_stale_temps, write_json_atomic

PART_BYTES = 32_000_000  # text per part: what a kill can cost (~10 s of tokenizing on 2 cores), and the resume step
PART = "part.json"
META = "meta.json"


def parts_folder(folder: Path, name: str) -> Path:
    return Path(folder) / f".{name}.parts"


def discard(folder: Path, name: str) -> bool:
    """Remove the parts of a shard set that is in place (a run killed between its final rename and this removal
    left them, as big as the shards) and the stale temporaries of a removal cut short -> whether parts were there."""
    sweep_stale_temps(folder)
    parts = parts_folder(folder, name)
    if parts.exists():
        remove_tree(parts)
        return True
    return False


def cut(docs, part_bytes: int):
    """(split, document, UTF-8 bytes) stream -> lists of them, each ending at the document that brings its text to
    `part_bytes` or more (the last one: whatever is left)."""
    chunk, n = [], 0
    for item in docs:
        chunk.append(item)
        n += item[2]
        if n >= part_bytes:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


class Parts:
    """The finished parts of one shard set, found (and checked) when opened."""

    def __init__(self, folder: Path, settings: dict, log=print):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from meta.json (tuples are lists)
        self.done: dict[int, dict] = {}
        if self.folder.exists() and _read_json(self.folder / META) != self.settings:
            remove_tree(self.folder)  # made from other text or settings: start over (renamed away before deletion)
        if not (self.folder / META).exists():
            write_json_atomic(self.folder / META, self.settings)
            return
        for p in sorted(self.folder.iterdir()):
            if not (p.is_dir() and p.name.isdigit()):
                continue
            info = _checked(p)
            if info is None:
                log(f"[data] {p}: damaged (a file differs from its part.json), written again")
                remove_tree(p)
            else:
                self.done[int(p.name)] = info

    def path(self, i: int) -> Path:
        return self.folder / f"{i:05d}"

    def kept(self, i: int, documents: int, n_bytes: int) -> dict | None:
        """Part i's part.json when it is finished and holds these documents, else None (it is written again)."""
        info = self.done.get(i)
        if info is not None and (info["documents"], info["bytes"]) == (documents, n_bytes):
            return info
        return None

    def bin(self, i: int, split: str) -> Path:
        return self.path(i) / f"{split}.bin"


def concatenate(paths: list[Path], out: Path, block: int = 1 << 24) -> str:
    """Write the files `paths` one after the other to `out` -> the sha256 of the result."""
    h = hashlib.sha256()
    with open(out, "wb") as w:
        for p in paths:
            with open(p, "rb") as r:
                while b := r.read(block):
                    h.update(b)
                    w.write(b)
    return h.hexdigest()


def _checked(part: Path) -> dict | None:
    """part.json of a finished part whose every file matches its recorded size and sha256, else None."""
    info = _read_json(part / PART)
    try:
        for split, (_, tokens, _, sha) in info["splits"].items():
            f = part / f"{split}.bin"
            if f.stat().st_size != tokens * info["itemsize"] or file_sha256(f) != sha:
                return None
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return info


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
