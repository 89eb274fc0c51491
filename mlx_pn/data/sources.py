"""Text sources -> documents.

A *source spec* is one of:
- ``bundled:NAME``: a real-text sample shipped in ``mlx_pn/data/bundled/NAME.jsonl.gz``;
- a path: ``.txt``/``.md``/``.rst``/``.py`` (one document per file), ``.jsonl``/``.jsonl.gz``
  (one document per line, field ``text``), ``.parquet`` (column ``text``, read through
  ``datasets``), or a folder holding any of these (read recursively, in sorted order);
- ``hf:DATASET[/CONFIG][:SPLIT]``: a Hugging Face dataset (needs internet; a user option only).

A ``.jsonl`` record is mlx-lm's ``{"text": ...}``, ``{"prompt": ..., "completion": ...}`` or
``{"messages": [{"role": ..., "content": ...}, ...]}``; the last two are flattened to text
(:func:`record_text`: one ``ROLE: CONTENT`` line per message, a prompt/completion pair as a user and an
assistant message, as mlx-lm's CompletionsDataset makes it). A folder whose top level holds ``train.jsonl``
is mlx_lm.lora's layout: only ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl`` are read and their splits are
kept as given (:func:`load_splits`); a missing ``valid.jsonl`` or ``test.jsonl`` is carved out of
``train.jsonl`` by the usual document split (never out of ``valid.jsonl``: early stopping reads it, so its
score would flatter the test).

Several specs are joined with commas. Documents are whitespace-stripped at both ends (so that
SentencePiece and the exported ``tokenizer.json`` agree on the first token) and empty ones dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

BUNDLED_DIR = Path(__file__).parent / "bundled"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text")
FILE_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".jsonl.gz", ".json.gz", ".parquet")


class DataError(ValueError):
    """Bad input data; the message names the file/field and the fix."""


# SentencePiece's max_sentence_length (data/tokenizer.py): a longer document is silently skipped by its trainer (and a
# corpus of only such documents ends in an INTERNAL error), so a document this long is refused where it is read
MAX_DOCUMENT_BYTES = 1 << 24


@dataclass(frozen=True)
class Document:
    id: str
    text: str


def _bundled_path(name: str) -> Path:
    return BUNDLED_DIR / f"{name}.jsonl.gz"


def bundled_names() -> list[str]:
    return sorted(p.name[: -len(".jsonl.gz")] for p in BUNDLED_DIR.glob("*.jsonl.gz"))


def _utf16(raw: bytes) -> bool:
    """A byte-order mark, or a zero byte in every other place of the first 64 (ASCII text in UTF-16)."""
    head = raw[:64]
    return raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 8 and (
        head[1::2].count(0) == len(head) // 2 or head[0::2].count(0) == (len(head) + 1) // 2))


def _decode(raw: bytes, where: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if _utf16(raw):
            raise DataError(_UTF16.format(where=where)) from None
        raise DataError(
            f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r}); re-encode it, e.g. "
            f"`iconv -f latin1 -t utf-8 IN > OUT`, or remove the file from the source list"
        ) from None
    if "\0" in text[:64] and _utf16(raw):  # UTF-16 without a byte-order mark decodes as UTF-8 full of NULs
        raise DataError(_UTF16.format(where=where))
    return text


_UTF16 = ("{where}: UTF-16 text (a byte-order mark, or a zero byte in every other place), not UTF-8; re-encode it: "
          "`iconv -f utf-16 -t utf-8 IN > OUT`")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered raw lines of a .jsonl or a .jsonl.gz; a damaged gzip stream is a DataError."""
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                yield n, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file after line {n} ({e or type(e).__name__}); re-create it "
                        f"(`gzip -t {path.name}` checks one) or use the uncompressed .jsonl") from None


RECORD_FORMATS = ('{"text": ...}, {"prompt": ..., "completion": ...} or {"messages": [{"role": ..., '
                  '"content": ...}, ...]} (mlx-lm\'s formats)')


def record_text(obj: dict, where: str) -> tuple[str, str]:
    """One JSONL record -> (its text, the field it came from). {"text"} as is; {"prompt", "completion"} as
    "user: PROMPT\\nassistant: COMPLETION"; {"messages"} as one "ROLE: CONTENT" line per message, in order.
    No chat template: our tokenizer has none, and these plain lines read the same in any tokenizer."""
    if isinstance(obj.get("text"), str):
        return obj["text"], "text"
    if "prompt" in obj or "completion" in obj:
        if not (isinstance(obj.get("prompt"), str) and isinstance(obj.get("completion"), str)):
            raise DataError(f"{where}: a prompt/completion record needs both 'prompt' and 'completion' as strings; "
                            f"fix that line (accepted records: {RECORD_FORMATS})")
        obj = {"messages": [{"role": "user", "content": obj["prompt"]},
                            {"role": "assistant", "content": obj["completion"]}]}
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects; "
                            f"fix that line")
        for i, m in enumerate(msgs):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content' (got "
                                f"{json.dumps(m)[:80]}); fix that message or drop it")
        return "\n".join(f"{m['role']}: {m['content']}" for m in msgs), "messages"
    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise DataError(f"{where}: expected an object with a string field 'text', or another of {RECORD_FORMATS}; "
                    f"got {keys}")


def _jsonl(path: Path) -> Iterator[Document]:
    for n, raw in _lines(path):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(_decode(raw, where))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg}); each line must be one JSON object") from None
        except RecursionError:
            raise DataError(f"{where}: JSON nested too deeply; each line must be one flat JSON object") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object with a string field 'text', or another of "
                            f"{RECORD_FORMATS}; got a JSON {type(obj).__name__}")
        text, field = record_text(obj, where)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a "\ud800" escape: a lone surrogate is no UTF-8 text
            raise DataError(f"{where}: field '{field}' holds an invalid \\u escape (lone surrogate at character "
                            f"{e.start}); fix the escape in that line") from None
        yield Document(str(obj.get("id", f"{path.name}:{n}")), text)


def _parquet(path: Path, batch_rows: int = 1024) -> Iterator[Document]:
    """Rows of a parquet file, streamed in record batches straight from the file with pyarrow (the engine under
    `datasets`): bounded memory, and nothing written anywhere (datasets.load_dataset would cache a copy of the
    file under ~/.cache/huggingface)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet needs pyarrow: pip install pyarrow (or datasets)") from None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]}); convert it to "
                        f".parquet, .jsonl or .txt") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise DataError(f"{path}: no 'text' column (columns: {names}); rename the text column to 'text'")
    if not pa.types.is_string(pf.schema_arrow.field("text").type) and \
            not pa.types.is_large_string(pf.schema_arrow.field("text").type):
        raise DataError(f"{path}: column 'text' holds {pf.schema_arrow.field('text').type}, not strings; "
                        f"store the document text as a string column")
    columns = ["text"] + (["id"] if "id" in names else [])
    i = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        ids = batch.column("id").to_pylist() if "id" in columns else None
        for j, text in enumerate(batch.column("text").to_pylist()):
            if text is None:
                raise DataError(f"{path}: row {i + j} has no text (null in column 'text'); drop or fill that row")
            yield Document(str(ids[j]) if ids is not None else f"{path.name}:{i + j}", text)
        i += batch.num_rows


def _hub(spec: str, cache_dir: Path | None = None) -> Iterator[Document]:
    """hf:DATASET[/CONFIG][:SPLIT] streamed from the hub (needs internet), or hf:FOLDER, a dataset saved as files
    (parquet, arrow, jsonl) in a local folder. What `datasets` writes while streaming (a lock file per dataset, the
    downloads' bookkeeping) goes under `cache_dir` (the run's DATA/hf), never ~/.cache/huggingface; without one,
    under a temporary folder removed when the stream ends."""
    import contextlib
    import tempfile

    import datasets

    name, _, split = spec[3:].partition(":")
    if Path(name).expanduser().is_dir():  # a local dataset folder: its path is no DATASET/CONFIG pair, and its
        name, conf, label = str(Path(name).expanduser()), "", Path(name).name  # ids (the split) ignore where it lies
    else:
        name, _, conf = name.rpartition("/") if name.count("/") >= 2 else (name, "", "")
        label = name
    temp = tempfile.TemporaryDirectory(prefix="mlx-pn-hf-") if cache_dir is None else contextlib.nullcontext(cache_dir)
    with temp as cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        ds = datasets.load_dataset(name, conf or None, split=split or "train", streaming=True, cache_dir=str(cache),
                                   download_config=datasets.DownloadConfig(cache_dir=str(Path(cache) / "downloads")))
        for i, row in enumerate(ds):
            if not isinstance(row.get("text"), str):
                raise DataError(f"{spec}: row {i} has no string 'text' column (columns: {sorted(row)[:8]}); pick a "
                                f"dataset (or config) whose text column is named 'text'")
            yield Document(f"{label}:{i}", row["text"])


SPLITS = ("train", "valid", "test")


def is_split_folder(path: Path) -> bool:
    """mlx_lm.lora's data layout: a folder whose top level holds train.jsonl (and valid.jsonl, test.jsonl)."""
    return path.is_dir() and (path / "train.jsonl").is_file()


def _files(folder: Path) -> list[Path]:
    if is_split_folder(folder):  # only the split files, as mlx-lm reads them
        return [folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()]
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(FILE_SUFFIXES))


def _path(path: Path, field: str, root: Path | None = None) -> Iterator[Document]:
    """root: the folder the spec named (a text file's id is its path inside it, or its name: never where the
    folder lives, since the id picks the document's split and a moved corpus must split the same way)."""
    if path.is_dir():
        files = _files(path)
        if not files:
            raise DataError(f"{field}: folder {path} holds no {'/'.join(FILE_SUFFIXES)} files")
        for f in files:
            yield from _path(f, field, root or path)
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        yield from _jsonl(path)
    elif path.suffix == ".parquet":
        yield from _parquet(path)
    else:
        doc_id = path.relative_to(root).as_posix() if root is not None else path.name
        yield Document(doc_id, _decode(path.read_bytes(), str(path)))


def _check_regular(path: Path, field: str) -> None:
    """A source named directly must be a regular file or a folder: /dev/zero (or a link to it) never ends and a
    FIFO blocks forever in open(); inside a folder such entries are skipped (_files keeps regular files)."""
    import stat

    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or \
            stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        shown = f"{path} (-> {path.resolve()})" if path.is_symlink() else str(path)
        raise DataError(f"{field}: {shown} is {kind}; point it at a text/.jsonl/.parquet file or a folder of them")


def _parts(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def read_source(spec: str, field: str = "data", cache_dir: Path | None = None) -> Iterator[Document]:
    """Documents of one spec, stripped, empty ones skipped; `field` names the config key in errors; cache_dir: where
    an hf: source's cache goes (the run's data folder)."""
    for part in _parts(spec):
        if part.startswith("bundled:"):
            name = part[len("bundled:"):]
            path = _bundled_path(name)
            if not path.exists():
                raise DataError(f"{field}: no bundled corpus '{name}'; available: {', '.join(bundled_names())}")
            docs = _jsonl(path)
        elif part.startswith("hf:"):
            docs = _hub(part, cache_dir)
        else:
            path = Path(part).expanduser()
            if not path.exists():
                raise DataError(f"{field}: '{path}' does not exist; fix the path or use a bundled corpus "
                                f"({', '.join('bundled:' + n for n in bundled_names())})")
            _check_regular(path, field)
            docs = _path(path, field)
        for d in docs:
            text = d.text.strip()
            if len(text) > MAX_DOCUMENT_BYTES // 4 and len(text.encode()) > MAX_DOCUMENT_BYTES:
                raise DataError(f"{field}: {part}: document {d.id!r} is {len(text.encode()) / 1e6:,.1f} MB in one piece, "
                                f"more than the {MAX_DOCUMENT_BYTES / 1e6:.1f} MB the tokenizer trains on; split it "
                                f"into smaller documents (a .txt file is one document: one file per document, or a "
                                f".jsonl with one record per document)")
            if text:
                yield Document(d.id, text)


def source_files(spec: str, field: str = "data") -> list[Path] | None:
    """The files a spec reads, in order; None when it is not local (a hub dataset)."""
    files: list[Path] = []
    for part in [s.strip() for s in spec.split(",") if s.strip()]:
        if part.startswith("hf:"):
            return None
        path = _bundled_path(part[len("bundled:"):]) if part.startswith("bundled:") else Path(part)
        if path.exists():
            _check_regular(path, field)
        files.extend(_files(path) if path.is_dir() else [path] if path.exists() else [])
    return files


def text_bytes(spec: str, field: str = "data") -> int | None:
    """About how many bytes of text a pass over `spec` yields, for a progress bar's total (its ETA): a file's size
    (.txt, .jsonl: markup and escapes make it a few % more than its text), a gzip file's recorded uncompressed
    size, a parquet file's uncompressed 'text' column; None when unknown (a hub dataset: no ETA is shown)."""
    files = source_files(spec, field)
    if files is None:
        return None
    total = 0
    for f in files:
        try:
            if f.name.endswith(".gz"):
                with open(f, "rb") as fh:  # gzip's trailer: the uncompressed size mod 2^32 (files < 4 GB exact)
                    fh.seek(-4, 2)
                    total += int.from_bytes(fh.read(4), "little")
            elif f.suffix == ".parquet":
                import pyarrow.parquet as pq

                meta = pq.ParquetFile(f).metadata
                col = meta.schema.to_arrow_schema().get_field_index("text")
                total += sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))
            else:
                total += f.stat().st_size
        except (OSError, ValueError, ImportError):
            return None  # no estimate: the bar still counts, without an ETA; reading says what is wrong
    return total


def fingerprint(spec: str, legacy: bool = False, field: str = "data") -> str:
    """sha256 over the spec and the content of every file it reads: cached shards are rebuilt when the
    text changes, not only when the spec does. A bundled file counts by its name, not by where this checkout
    lies, so a moved checkout keeps its data; legacy: the older hash over every file's absolute path (shards
    and tokenizers made with it are still accepted)."""
    h = hashlib.sha256(spec.encode())
    for f in source_files(spec, field) or []:
        bundled = not legacy and f.parent == BUNDLED_DIR
        h.update(f"bundled:{f.name}".encode() if bundled else str(f).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_documents(spec: str, field: str = "data", max_docs: int = 0, allow_empty: bool = False,
                   cache_dir: Path | None = None) -> list[Document]:
    docs = []
    for d in read_source(spec, field, cache_dir):
        docs.append(d)
        if max_docs and len(docs) >= max_docs:
            break
    if not docs and not allow_empty:
        raise DataError(f"{field}: '{spec}' holds no non-empty documents; point it at real text")
    return docs


def split_documents(docs: list[Document], valid_fraction: float, test_fraction: float,
                    report: dict | None = None) -> dict[str, list[Document]]:
    """Deterministic split by a hash of each document's id and text (stable across runs/machines).

    Exact and near-duplicate documents (mlx_pn.data.dedup) form a group that lands in one split: the split
    of its member with the lowest hash, so a document without duplicates keeps the split it always had.
    `report`, if given, receives the grouping's counts and how many documents the grouping moved."""
    from mlx_pn.data.dedup import duplicate_groups

    def pick(h: float) -> str:
        return "valid" if h < valid_fraction else "test" if h < valid_fraction + test_fraction else "train"

    hs = [int.from_bytes(hashlib.sha1(f"{d.id}\0{d.text[:256]}".encode()).digest()[:8], "big") / 2**64
          for d in docs]
    groups = duplicate_groups([d.text for d in docs])
    low: dict[int, float] = {}
    for g, h in zip(groups.root.tolist(), hs):
        low[g] = min(h, low.get(g, h))
    splits: dict[str, list[Document]] = {"train": [], "valid": [], "test": []}
    moved = 0
    for d, g, h in zip(docs, groups.root.tolist(), hs):
        name = pick(low[g])
        moved += name != pick(h)
        splits[name].append(d)
    # A tiny corpus can miss a held-out split by chance: move the last train document without duplicates there.
    alone = {id(d) for d, n in zip(docs, groups.sizes()) if n == 1}
    for name, frac in (("valid", valid_fraction), ("test", test_fraction)):
        if frac > 0 and not splits[name] and len(splits["train"]) > 2:
            i = next((i for i in range(len(splits["train"]) - 1, -1, -1) if id(splits["train"][i]) in alone), None)
            if i is not None:
                splits[name].append(splits["train"].pop(i))
    if report is not None:
        report.update(groups.stats(), moved_by_grouping=moved)
    return splits


def load_splits(spec: str, field: str, valid_fraction: float, test_fraction: float, max_docs: int = 0,
                cache_dir: Path | None = None) -> tuple[dict[str, list[Document]], str]:
    """Documents of a spec in train/valid/test -> (splits, how they were made: a line for the data report).

    A part of the spec that is an mlx-lm folder (:func:`is_split_folder`) keeps its train/valid/test.jsonl as
    given (max_docs: at most that many documents per file); a split file it lacks is carved out of its
    train.jsonl by :func:`split_documents` with that split's fraction. Every other part is pooled and split by
    :func:`split_documents`, as before. Splits given by a source bypass the random split altogether."""
    given = [p for p in _parts(spec) if not p.startswith(("bundled:", "hf:")) and is_split_folder(Path(p).expanduser())]
    rest = ",".join(p for p in _parts(spec) if p not in given)
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    how = []
    for part in given:
        folder = Path(part).expanduser()
        own = {s: load_documents(str(folder / f"{s}.jsonl"), field, max_docs, allow_empty=s != "train")
               for s in SPLITS if (folder / f"{s}.jsonl").is_file()}
        for s, frac in (("valid", valid_fraction), ("test", test_fraction)):
            if s in own and not own[s] and frac > 0:  # said here, not later as "too few to fill the split"
                raise DataError(f"{field}: {folder / f'{s}.jsonl'} is empty (no non-empty records); add held-out "
                                f"records to it, or delete it to carve {s} out of train.jsonl ({frac:.0%} of its "
                                f"documents)")
        missing = [s for s in ("valid", "test") if s not in own]
        if missing:
            carve = split_documents(own["train"], valid_fraction if "valid" in missing else 0.0,
                                    test_fraction if "test" in missing else 0.0)
            own.update({"train": carve["train"], **{s: carve[s] for s in missing}})
        for s in SPLITS:
            splits[s].extend(own[s])
        how.append(f"{folder}: {'/'.join(f'{s}.jsonl' for s in SPLITS if s not in missing)} as given"
                   + "".join(f", {s} = {frac:.0%} of train.jsonl's documents (no {s}.jsonl)"
                             for s, frac in (("valid", valid_fraction), ("test", test_fraction)) if s in missing))
    if rest:
        pooled = split_documents(load_documents(rest, field, max_docs, cache_dir=cache_dir), valid_fraction,
                                 test_fraction)
        for s in SPLITS:
            splits[s].extend(pooled[s])
        if given:
            how.append(f"{rest}: split by document ({valid_fraction:.0%} valid, {test_fraction:.0%} test)")
    return splits, "; ".join(how)
