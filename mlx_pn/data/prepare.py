"""The data stage: documents -> tokenizer -> shards, cached and resumable.

Each corpus is rebuilt only when its manifest is missing or was made from another source spec,
split or tokenizer, or when a shard fails its size/sha256 check (said in the log); an interrupted run
leaves no half-written shard (temp folder + rename).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mlx_pn.config import Config
from mlx_pn.data.shards import Corpus, read_manifest
from mlx_pn.io import write_json_atomic
from mlx_pn.data import dedup, remembered, shard_parts
from mlx_pn.data.sources import DataError, fingerprint
from mlx_pn.data.splitting import plan_corpus
from mlx_pn.data.tokenizer import Tokenizer, train_tokenizer

GENERIC = "generic"


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    corpora: dict[str, Corpus]  # "generic" and every domain

    def domain_names(self) -> list[str]:
        return [n for n in self.corpora if n != GENERIC]


def _same_source(stored, current, spec: str, key: dict | None = None) -> bool:
    """stored == current, or data made before fingerprints were checkout-independent: stored equals the legacy
    (absolute-path) fingerprint of `spec`, or `key` with it as "generic" (computed only when needed)."""
    if stored == current:
        return True
    legacy = fingerprint(spec, legacy=True)
    return stored == (legacy if key is None else key | {"generic": legacy})


def _made_from(root) -> str:
    """', made from generic=X (DATA/sources.json): drop the flag to use it'", where the run recorded it."""
    made = remembered.stored(root)
    if not made:
        return ""
    return (f" (this run's data was made from data.generic={made.get('generic')!r}, vocab_size="
            f"{made.get('vocab_size')}: {root / remembered.FILE}; leave data.* unset to use them)")


def _sources(cfg: Config) -> dict[str, tuple[str, str]]:
    """corpus name -> (source spec, config key for error messages)."""
    out = {GENERIC: (cfg.data.generic, "data.generic")}
    for name, spec in cfg.data.domains.items():
        if name == GENERIC:
            raise DataError("data.domains: 'generic' is reserved for data.generic; rename that domain")
        out[name] = (spec, f"data.domains.{name}")
    return out


def prepare_data(cfg: Config, only: list[str] | None = None, log=print) -> PreparedData:
    """Build (or reuse) the tokenizer and the shards of the generic corpus and of each domain."""
    root = cfg.data_dir
    sources = _sources(cfg)
    wanted = [GENERIC] + [n for n in sources if n != GENERIC and (only is None or n in only)]
    tok_dir = root / "tokenizer"
    split_key = {"valid_fraction": cfg.data.valid_fraction, "test_fraction": cfg.data.test_fraction,
                 "max_docs": cfg.data.max_docs}
    prints = {name: fingerprint(spec, field=field) for name, (spec, field) in sources.items() if name in wanted}
    tok_key = {"generic": prints[GENERIC], "vocab_size": cfg.data.vocab_size, **split_key,
               "sample_mb": cfg.data.tokenizer_sample_mb}
    meta = tok_dir / "source.json"

    plans: dict = {}

    def plan(name: str):  # each corpus is indexed (or read) at most once per call
        if name not in plans:
            spec, field = sources[name]
            plans[name] = plan_corpus(name, spec, field, cfg, prints[name], log)
        return plans[name]

    if (tok_dir / "spm.model").exists() and (tok_dir / "hf" / "tokenizer.json").exists():
        tok = Tokenizer(tok_dir)
        if tok.vocab_size != cfg.data.vocab_size:
            raise DataError(
                f"{tok_dir}: tokenizer has {tok.vocab_size} ids but data.vocab_size={cfg.data.vocab_size}; "
                f"delete {tok_dir} (and the shards) to retrain it, or set data.vocab_size={tok.vocab_size}")
        if not meta.exists():
            # made by an older version (or one killed between the two writes): adopt the current settings
            log(f"[data] {meta} is missing; assuming {tok_dir} was trained on data.generic as configured now")
            write_json_atomic(meta, tok_key)
        elif not _same_source(json.loads(meta.read_text()), tok_key, cfg.data.generic, tok_key):
            raise DataError(
                f"{tok_dir} was trained on other generic text or settings than data.generic={cfg.data.generic!r} "
                f"now gives{_made_from(root)}; for other text use another --out (or data.dir), or delete {tok_dir} "
                f"to retrain it (models trained with the old one need it)")
    else:
        generic = plan(GENERIC)
        log(f"[data] training a {cfg.data.vocab_size}-piece SentencePiece tokenizer on generic text")
        t0 = time.perf_counter()
        tok = train_tokenizer(generic.texts("train"), cfg.data.vocab_size, tok_dir, cfg.data.tokenizer_sample_mb,
                              meta=tok_key)
        log(f"[data] tokenizer trained in {time.perf_counter() - t0:.1f} s (on at most data.tokenizer_sample_mb="
            f"{cfg.data.tokenizer_sample_mb:g} MB of the generic train split)")

    corpora = {}
    for name in wanted:
        spec, field = sources[name]
        folder = root / "shards" / name
        m = read_manifest(folder)
        fresh = (m is not None and m.get("source") == spec and m.get("tokenizer_sha256") == tok.sha256
                 and m.get("split") == split_key
                 and _same_source(m.get("fingerprint"), prints[name], spec)  # or the older, path-based one
                 and (m.get("duplicates") or {}).get("method") == dedup.VERSION
                 # made before valid/test held one copy per exact-duplicate group: still right when it had no copies
                 and ("copies_left_out" in m["duplicates"] or not plan(name).held_out_copies()))
        if fresh:
            try:
                Corpus(folder, tok, verify_hashes=True)
            except DataError as e:
                log(f"[data] {e}")
                log(f"[data] {name}: rebuilding the damaged shards from {field}")
                fresh = False
            else:
                shard_parts.discard(root / "shards", name)
        if not fresh:
            corpus = plan(name)
            # the duplicates left (groups across splits: given splits only) and the generic/domain overlap
            leaks = corpus.leak_report(None if name == GENERIC else plan(GENERIC).reference())
            how = corpus.how
            m = corpus.write(tok, root / "shards", extra={"split": split_key, "fingerprint": prints[name],
                                                          "splits_from": how or "split by document",
                                                          "duplicates": leaks})
            sizes = ", ".join(f"{s} {v['tokens']:,} tok/{v['documents']} docs" for s, v in m["splits"].items())
            log(f"[data] {name}: {sizes}" + (f" (splits: {how})" if how else ""))
            over = sum((leaks.get("in_generic_train") or {}).values())
            left = leaks["copies_left_out"]
            if leaks["grouped_documents"] or leaks["groups_across_splits"] or over or sum(left.values()):
                log(f"[data] {name}: {leaks['grouped_documents']} documents in {leaks['groups']} duplicate groups "
                    f"({leaks['exact_duplicates']} exact, {leaks['near_duplicates']} near copies), "
                    f"{leaks['groups_across_splits']} groups across splits, {over} valid/test documents also in the "
                    f"generic train split; exact copies left out of the held-out shards (each group evaluated once): "
                    f"{', '.join(f'{k} {v}' for k, v in left.items())} (manifest.json: duplicates)")
            if name != GENERIC and _all_in_generic(corpus, plan(GENERIC)):
                log(f"[data] warning: {name}: every one of its documents is also in the generic text: this domain looks "
                    f"like a part of data.generic, so the model is pretrained on it and its perplexities say little "
                    f"about specialization; point {field} at other text, or take it out of data.generic")
        corpora[name] = Corpus(folder, tok)
        if only is not None and name in only:  # a domain about to be specialized to: every split is read
            _check_splits(corpora[name], spec, field, cfg)
    remembered.record(cfg)
    return PreparedData(tok, corpora)


def _all_in_generic(domain, generic) -> bool:
    """Every document of `domain` has an exact copy (same normalised text) somewhere in the generic corpus."""
    import numpy as np

    keys = domain.exact_keys()
    return bool(len(keys)) and bool(np.isin(keys, generic.exact_keys()).all())


def _check_splits(corpus: Corpus, spec: str, field: str, cfg: Config) -> None:
    """Every split a stage reads must hold tokens: a corpus of one or two documents cannot be split into
    train/valid/test (perplexity of an empty split is undefined); say so here, naming the source."""
    wanted = {"train": 1.0, "valid": cfg.data.valid_fraction, "test": cfg.data.test_fraction}
    splits = corpus.manifest["splits"]
    docs = sum(s["documents"] for s in splits.values())
    for split, frac in wanted.items():
        if frac > 0 and splits.get(split, {}).get("tokens", 0) < 2:
            raise DataError(
                f"{field}: '{spec}' has {docs} document(s), too few to fill the {split} split (valid_fraction="
                f"{cfg.data.valid_fraction}, test_fraction={cfg.data.test_fraction} of the documents are held out); "
                f"add documents (a few dozen at least), or split one long text into several files/lines")
