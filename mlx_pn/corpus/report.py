"""What a prepared corpus holds, counted and written down: tokens per split and per generic source, the
per-domain train subsets used for specialization, and CORPUS_DIR/report.md (recipes.prepare)."""

from __future__ import annotations

from pathlib import Path

from mlx_pn.io import write_text_atomic

SUBSETS = {"1M": 1_000_000}


def token_breakdown(cfg, domains: list[str], by_source: bool) -> tuple[dict, dict]:
    """Per generic source tokens per split (offline mix: ids are "source/...") and, per domain, the
    number of train documents (in shard order) needed to reach each SUBSETS size.

    The subsets are read from the domain's train shard (a document ends at its eos): the splits are the
    shards' own, whatever made them (an mlx-lm folder's given train.jsonl included), and no domain text is
    re-read. Only the per-source counts re-read the generic text, split as the data stage splits it
    (load_splits); their sum must equal the shard manifest (check_recount)."""
    from mlx_pn.data.shards import Corpus
    from mlx_pn.data.sources import load_splits
    from mlx_pn.data.tokenizer import Tokenizer

    tok = Tokenizer(cfg.data_dir / "tokenizer")
    sources: dict[str, dict] = {}
    if by_source:
        splits, _ = load_splits(cfg.data.generic, "data.generic", cfg.data.valid_fraction, cfg.data.test_fraction,
                                cfg.data.max_docs)
        for split, docs in splits.items():
            for i in range(0, len(docs), 512):
                chunk = docs[i:i + 512]
                for d, ids in zip(chunk, tok.encode_batch([d.text for d in chunk])):
                    s = sources.setdefault(d.id.split("/", 1)[0], {"documents": 0, "bytes_utf8": 0, "tokens": {}})
                    s["documents"] += 1
                    s["bytes_utf8"] += len(d.text.encode("utf-8"))
                    s["tokens"][split] = s["tokens"].get(split, 0) + len(ids) + 1  # + eos
    subsets = {name: train_subsets(Corpus(cfg.data_dir / "shards" / name, tok)) for name in domains}
    return sources, subsets


def train_subsets(corpus, chunk: int = 1 << 20) -> dict:
    """The SUBSETS sizes of a corpus's train split, in shard order: {label: {tokens, documents, reached},
    "max": {tokens, documents}}. The smallest whole-document prefix with at least `target` tokens ends at the
    first eos at or after position target - 1; the memory-mapped shard is scanned in chunks only that far."""
    import numpy as np

    ids, eos = corpus.tokens("train"), corpus.manifest["eos_id"]
    total = corpus.manifest["splits"]["train"]
    entry = {}
    for label, target in SUBSETS.items():
        docs, start, found = 0, 0, None
        while start < len(ids) and found is None:
            ends = np.flatnonzero(np.asarray(ids[start:start + chunk]) == eos) + start
            after = ends[ends >= target - 1]
            if after.size:
                found = int(after[0])
                docs += int((ends <= found).sum())
            else:
                docs += ends.size
            start += chunk
        if found is None:
            entry[label] = {"tokens": total["tokens"], "documents": total["documents"], "reached": False}
        else:
            entry[label] = {"tokens": found + 1, "documents": docs, "reached": True}
    entry["max"] = {"tokens": total["tokens"], "documents": total["documents"]}
    return entry


def check_recount(sources: dict, subsets: dict, shards: dict, data_dir: Path) -> None:
    """The per-source recount of token_breakdown must equal the generic shard manifest; a DataError says how
    to recover."""
    from mlx_pn.data.sources import DataError

    if sources:
        total = sum(s["tokens"].get("train", 0) for s in sources.values())
        if total != shards["generic"]["splits"]["train"]["tokens"]:
            raise DataError(f"generic: per-source recount ({total}) differs from the shards; rerun with a "
                            f"fresh {data_dir}")


def write_report(path: Path, manifest: dict, prepared: dict) -> None:
    """report.md: the build's parts (offline mix), the token shards, the sources, the specialization subsets."""
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
    dups = {n: c["duplicates"] for n, c in prepared["corpora"].items() if c.get("duplicates")}
    if dups:
        L += ["", "Duplicates (mlx_pn.data.dedup: exact = same normalised text, near = word 5-gram Jaccard >= 0.8), "
              "grouped before the split so that a group lands in one split; `in generic train`: a domain's valid/test "
              "documents that also sit in the generic train split.", "",
              "| corpus | grouped docs | groups | exact | near | groups across splits | in generic train (valid/test) |",
              "|---|---:|---:|---:|---:|---:|---|"]
        for n, d in dups.items():
            g = d.get("in_generic_train")
            overlap = "-" if g is None else f"{g.get('valid', 0)}/{g.get('test', 0)}"
            L.append(f"| {n} | {d['grouped_documents']:,} | {d['groups']:,} | {d['exact_duplicates']:,} | "
                     f"{d['near_duplicates']:,} | {d['groups_across_splits']:,} | {overlap} |")
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
