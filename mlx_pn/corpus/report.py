"""What a prepared corpus holds, counted and written down: tokens per split and per generic source, the
per-domain train subsets used for specialization, and CORPUS_DIR/report.md (recipes.prepare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_pn.io import write_text_atomic

SUBSETS = {"1M": 1_000_000}


def token_breakdown(corpora: dict, domains: list[str], by_source: bool) -> tuple[dict, dict]:
    """Per generic source tokens per split (offline mix: ids are "source/...") and, per domain, the number of
    train documents (in shard order) needed to reach each SUBSETS size.

    Read from the shards and their manifests (corpora: name -> mlx_pn.data.shards.Corpus), not by re-reading the
    text: the counts are the shards' own, splits given by a source (an mlx-lm folder) included, and memory stays
    bounded at any corpus size."""
    sources = (corpora["generic"].manifest.get("sources") or {}) if by_source else {}
    subsets = {}
    for name in domains:
        lens = corpora[name].document_lengths("train")
        cum = np.cumsum(lens)
        entry = {}
        for label, target in SUBSETS.items():
            k = min(int(np.searchsorted(cum, target)) + 1, len(lens))  # first k documents with >= target tokens
            tokens = int(cum[k - 1]) if k else 0
            entry[label] = {"tokens": tokens, "documents": k, "reached": tokens >= target}
        entry["max"] = {"tokens": int(cum[-1]) if len(cum) else 0, "documents": len(lens)}
        subsets[name] = entry
    return sources, subsets


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
              "documents that also sit in the generic train split; `copies left out`: exact copies beyond the first "
              "of their group, left out of the valid/test shards (each group is evaluated once).", "",
              "| corpus | grouped docs | groups | exact | near | groups across splits | in generic train (valid/test) "
              "| copies left out (valid/test) |",
              "|---|---:|---:|---:|---:|---:|---|---|"]
        for n, d in dups.items():
            g, c = d.get("in_generic_train"), d.get("copies_left_out")
            overlap = "-" if g is None else f"{g.get('valid', 0)}/{g.get('test', 0)}"
            left = "-" if c is None else f"{c.get('valid', 0)}/{c.get('test', 0)}"
            L.append(f"| {n} | {d['grouped_documents']:,} | {d['groups']:,} | {d['exact_duplicates']:,} | "
                     f"{d['near_duplicates']:,} | {d['groups_across_splits']:,} | {overlap} | {left} |")
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
