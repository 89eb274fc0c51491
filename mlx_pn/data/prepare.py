"""The data stage: documents -> tokenizer -> shards, cached and resumable.

Each corpus is rebuilt only when its manifest is missing or was made from another source spec,
split or tokenizer, or when a shard fails its size/sha256 check (said in the log); an interrupted run
leaves no half-written shard (temp folder + rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlx_pn.config import Config
from mlx_pn.data.shards import Corpus, build_shards, read_manifest
from mlx_pn.io import write_json_atomic
from mlx_pn.data import dedup
from mlx_pn.data.sources import DataError, fingerprint, load_splits
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
                f"now gives; delete {tok_dir} to retrain it (models trained with the old one need it), or use "
                f"another data.dir")
        generic_splits = None
    else:
        generic_splits = load_splits(cfg.data.generic, "data.generic", cfg.data.valid_fraction,
                                     cfg.data.test_fraction, cfg.data.max_docs)
        splits = generic_splits[0]
        log(f"[data] training a {cfg.data.vocab_size}-piece SentencePiece tokenizer on generic text")
        tok = train_tokenizer((d.text for d in splits["train"]), cfg.data.vocab_size, tok_dir,
                              cfg.data.tokenizer_sample_mb, meta=tok_key)

    corpora, generic_train, generic_keys = {}, None, set()
    for name in wanted:
        spec, field = sources[name]
        folder = root / "shards" / name
        m = read_manifest(folder)
        fresh = (m is not None and m.get("source") == spec and m.get("tokenizer_sha256") == tok.sha256
                 and m.get("split") == split_key
                 and _same_source(m.get("fingerprint"), prints[name], spec)  # or the older, path-based one
                 and (m.get("duplicates") or {}).get("method") == dedup.VERSION)
        if fresh:
            try:
                Corpus(folder, tok, verify_hashes=True)
            except DataError as e:
                log(f"[data] {e}")
                log(f"[data] {name}: rebuilding the damaged shards from {field}")
                fresh = False
        if not fresh:
            splits, how = generic_splits if (name == GENERIC and generic_splits is not None) else \
                load_splits(spec, field, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.data.max_docs)
            if name != GENERIC and generic_train is None and generic_splits is None:  # generic shards cached: read it
                generic_splits = load_splits(cfg.data.generic, "data.generic", cfg.data.valid_fraction,
                                             cfg.data.test_fraction, cfg.data.max_docs)
            if generic_train is None:
                gsplits = splits if name == GENERIC else generic_splits[0]
                generic_train = dedup.NearIndex([d.text for d in gsplits["train"]])
                # every generic document's normalised-text hash (12 bytes each): a domain made of generic text
                generic_keys = {dedup.exact_key(d.text) for docs in gsplits.values() for d in docs}
            # the duplicates left (groups across splits: given splits only) and the generic/domain overlap
            leaks = dedup.leak_report(splits, None if name == GENERIC else generic_train)
            m = build_shards(name, splits, tok, root / "shards", spec, extra={"split": split_key, "fingerprint": prints[name],
                                                                          "splits_from": how or "split by document",
                                                                          "duplicates": leaks})
            sizes = ", ".join(f"{s} {v['tokens']:,} tok/{v['documents']} docs" for s, v in m["splits"].items())
            log(f"[data] {name}: {sizes}" + (f" (splits: {how})" if how else ""))
            over = sum((leaks.get("in_generic_train") or {}).values())
            if leaks["grouped_documents"] or leaks["groups_across_splits"] or over:
                log(f"[data] {name}: {leaks['grouped_documents']} documents in {leaks['groups']} duplicate groups "
                    f"({leaks['exact_duplicates']} exact, {leaks['near_duplicates']} near copies), "
                    f"{leaks['groups_across_splits']} groups across splits, {over} valid/test documents also in the "
                    f"generic train split (manifest.json: duplicates)")
            held = sum(len(splits[s]) for s in ("valid", "test") if s in splits)
            copies = 0 if name == GENERIC else sum(dedup.exact_key(d.text) in generic_keys
                                                   for docs in splits.values() for d in docs)
            n_docs = sum(len(docs) for docs in splits.values())
            if name != GENERIC and ((held and over == held) or copies == n_docs):
                log(f"[data] warning: {name}: " + (f"all {n_docs} of its documents are also in the generic text"
                                                   if copies == n_docs else f"all {held} of its valid/test documents "
                                                   f"also sit in the generic train split") +
                    f": this domain looks like a part of the generic text, so the model is pretrained on it and its "
                    f"perplexities say little about specialization; point {field} at other text, or take it out of "
                    f"data.generic")
        corpora[name] = Corpus(folder, tok)
        if only is not None and name in only:  # a domain about to be specialized to: every split is read
            _check_splits(corpora[name], spec, field, cfg)
    return PreparedData(tok, corpora)


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
