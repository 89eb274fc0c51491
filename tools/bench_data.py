"""The data stage at a user's scale: time, throughput and peak memory of `recipes.prepare` on a generated corpus of
N MB of real sentences (unique documents), against Hugging Face `tokenizers` encoding the same text with the same
tokenizer.json on the same cores, in the same run; optionally the same prepare from another checkout (before/after).

    python -m tools.bench_data --mb 50 200
    python -m tools.bench_data --mb 200 --baseline-code /path/to/older/checkout   # its prepare, same corpus
    python -m tools.bench_data --mb 100 --workers 1 2                            # 1 vs 2 workers (index, encode)
    python -m tools.bench_data --mb 30 --workers 2 1 --rounds 3                  # interleaved, medians (shared cores)

The corpus: documents of 10-40 sentences drawn (seeded) from the bundled generic text's sentences, each document
numbered so that no two are duplicates, written as .jsonl files of ~64 MB in WORK/corpus-NMB/. Each prepare runs in
a child process (peak RSS from the kernel's accounting of that child) with the bundled domains, vocab 8192.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sentences() -> list[str]:
    path = REPO / "mlx_pn" / "data" / "bundled" / "generic.jsonl.gz"
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.strip()) > 20]
    return out


def make_corpus(folder: Path, mb: float, seed: int = 0) -> int:
    """Write ~mb MB of unique documents to folder/*.jsonl (kept when it exists); -> bytes of text."""
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())["bytes"]
    folder.mkdir(parents=True, exist_ok=True)
    pool, rng = sentences(), random.Random(seed)
    total, part, n, f = 0, 0, 0, None
    while total < mb * 1e6:
        if f is None or f.tell() > 64e6:
            if f:
                f.close()
            f = open(folder / f"part-{part:04d}.jsonl", "w", encoding="utf-8")
            part += 1
        text = f"Document {n}. " + " ".join(rng.choice(pool) for _ in range(rng.randint(10, 40)))
        f.write(json.dumps({"id": f"doc-{n}", "text": text}) + "\n")
        total += len(text.encode())
        n += 1
    f.close()
    done.write_text(json.dumps({"bytes": total, "documents": n}))
    return total


PHASES = {  # the generic corpus's phases, from prepare's log (a checkout that does not log them has none)
    "index_s": r"\[data\] generic: [\d,.]+ MB of text \([\d,]+ documents\) indexed in ([\d.]+) s",
    "tokenizer_s": r"\[data\] tokenizer trained in ([\d.]+) s",
    "encode_s": r"\[data\] generic: [\d,.]+ MB of text encoded in ([\d.]+) s",
    "index_cpu_s": r"\[data\] generic: [\d,.]+ MB of text \([\d,]+ documents\) indexed in .*?, ([\d.]+) CPU s\)",
    "encode_cpu_s": r"\[data\] generic: [\d,.]+ MB of text encoded in .*?, ([\d.]+) CPU s\)",
}


def run_prepare(corpus: Path, out: Path, code: Path, workers: int = 0) -> dict:
    """recipes.prepare in a child process with `code` first on the path -> seconds, peak RSS (MB), tokens, and the
    generic corpus's phase times where its log has them."""
    env = {**os.environ, "PYTHONPATH": str(code), "TOKENIZERS_PARALLELISM": "true"}
    cmd = [sys.executable, "-m", "recipes.prepare", "--config", "tiny", "--corpus", str(corpus), "--out", str(out),
           "--data.max_docs", "0", "--data.vocab_size", "8192", "--data.workers", str(workers)]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.name + ".log")  # beside the run: --out must be new or the library's own folder
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=out.parent, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS, not the largest of all children
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"prepare failed ({code}):\n{log.read_text()[-2000:]}")
    peak = usage.ru_maxrss  # KB on Linux
    # CPU seconds of the child and of the workers it waited for: far less moved by other users' load than wall time
    cpu = usage.ru_utime + usage.ru_stime
    m = json.loads((out / "data" / "shards" / "generic" / "manifest.json").read_text())
    tokens = sum(s["tokens"] for s in m["splits"].values())
    text = log.read_text()
    phases = {k: float(m.group(1)) for k, rx in PHASES.items() if (m := re.search(rx, text))}
    return {"seconds": secs, "cpu_s": cpu, "peak_rss_mb": peak / 1024, "generic_tokens": tokens, **phases}


def tokenizers_peer(corpus: Path, tokenizer_json: Path, batch: int = 1000) -> dict:
    """Hugging Face tokenizers' encode_batch over the same documents (all cores) -> seconds, MB/s, tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    t0, c0, n_bytes, n_tokens, docs = time.perf_counter(), time.process_time(), 0, 0, []

    def flush():
        nonlocal n_tokens
        n_tokens += sum(len(e.ids) for e in tok.encode_batch(docs))
        docs.clear()

    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                docs.append(text)
                n_bytes += len(text.encode())
                if len(docs) == batch:
                    flush()
    flush()
    secs = time.perf_counter() - t0
    cpu = time.process_time() - c0  # every thread of this process (tokenizers' own threads included)
    return {"seconds": secs, "cpu_s": cpu, "mb_per_s": n_bytes / 1e6 / secs, "tokens": n_tokens}


def _peer(corpus: Path, tok_json: Path, mb: float, rnd: int) -> dict:
    peer = tokenizers_peer(corpus, tok_json)
    print(f"[{mb:g} MB, round {rnd}] tokenizers encode_batch (peer): {peer['seconds']:.1f} s "
          f"({peer['cpu_s']:.1f} CPU s), {peer['mb_per_s']:.2f} MB/s; load {os.getloadavg()[0]:.1f}", flush=True)
    return peer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, nargs="+", default=[50.0], help="corpus sizes in MB of text (default 50)")
    ap.add_argument("--work", default="/tmp/mlx-pn-bench-data",
                    help="corpora and runs (default /tmp/mlx-pn-bench-data)")
    ap.add_argument("--baseline-code", default=None, metavar="CHECKOUT",
                    help="also run the prepare of another checkout of this repository on the same corpus")
    ap.add_argument("--workers", type=int, nargs="+", default=[0],
                    help="data.workers of this checkout's prepare, one run each (default 0: one per core); the "
                         "baseline checkout runs with its default")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every run this many times, interleaved (peer, then each candidate), and report the "
                         "median: on a shared machine the load moves between runs (default 1)")
    ap.add_argument("--json", default=None, help="write the measurements to this file")
    args = ap.parse_args(argv)
    work = Path(args.work)
    rows = []
    for mb in args.mb:
        corpus = work / f"corpus-{mb:g}MB"
        n_bytes = make_corpus(corpus, mb)
        runs = {f"mlx_pn (this checkout, data.workers {w})": (REPO, w) for w in args.workers}
        if args.baseline_code:
            runs["baseline checkout"] = (Path(args.baseline_code).resolve(), 0)
        tok_json = None
        for rnd in range(1, args.rounds + 1):
            row = {"mb": n_bytes / 1e6, "round": rnd, "load_start": os.getloadavg()[0]}
            if tok_json is not None:  # the peer first from the 2nd round on (it needs a prepared tokenizer.json)
                row["tokenizers encode_batch"] = _peer(corpus, tok_json, mb, rnd)
            for label, (code, workers) in runs.items():
                out = work / f"run-{mb:g}MB-{'base' if code != REPO else f'w{workers}'}"
                if out.exists():
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                r = run_prepare(corpus, out, code, workers)
                r["mb_per_s"] = n_bytes / 1e6 / r["seconds"]
                r["load_after"] = os.getloadavg()[0]
                row[label] = r
                phases = ", ".join(f"{k[:-2].replace('_cpu', ' CPU')} {r[k]:.1f} s" for k in PHASES if k in r)
                print(f"[{mb:g} MB, round {rnd}] {label}: {r['seconds']:.1f} s ({r['cpu_s']:.1f} CPU s), "
                      f"{r['mb_per_s']:.2f} MB/s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB, {r['generic_tokens']:,} generic tokens"
                      + (f" ({phases})" if phases else "") + f"; load {r['load_after']:.1f}", flush=True)
                if tok_json is None:
                    tok_json = work / f"tokenizer-{mb:g}MB.json"
                    tok_json.write_bytes((out / "data" / "tokenizer" / "hf" / "tokenizer.json").read_bytes())
            if "tokenizers encode_batch" not in row:
                row["tokenizers encode_batch"] = _peer(corpus, tok_json, mb, rnd)
            row["load_end"] = os.getloadavg()[0]
            rows.append(row)
    print(f"\n{os.cpu_count()} cores; ratios against the peer of the same round")
    print("| MB of text | round | candidate | seconds | MB/s | peak RSS MB | vs tokenizers encode_batch "
          "| generic encode MB/s | encode vs peer | CPU s | CPU vs peer | load after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        peer = row["tokenizers encode_batch"]["mb_per_s"]
        for label in [k for k in row if isinstance(row[k], dict)]:
            r = row[label]
            rss = f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else "-"
            enc = row["mb"] / r["encode_s"] if r.get("encode_s") else None
            encs = (f"{enc:.2f} | {enc / peer:.2f}x") if enc else "- | -"
            cpu = row["tokenizers encode_batch"]["cpu_s"] / r["cpu_s"]  # > 1: less CPU than the peer for the text
            print(f"| {row['mb']:.0f} | {row['round']} | {label} | {r['seconds']:.1f} | {r['mb_per_s']:.2f} | {rss} | "
                  f"{r['mb_per_s'] / peer:.2f}x | {encs} | {r['cpu_s']:.1f} | {cpu:.2f}x | "
                  f"{r.get('load_after', row['load_end']):.1f} |")
    if args.rounds > 1:
        print("\nMedians over the rounds")
        print("| MB of text | candidate | MB/s | vs tokenizers encode_batch | encode vs peer | CPU vs peer "
              "| encode CPU vs peer CPU |")
        print("|---|---|---|---|---|---|---|")
        for mb in sorted({round(r["mb"]) for r in rows}):
            these = [r for r in rows if round(r["mb"]) == mb]
            for label in [k for k in these[0] if isinstance(these[0][k], dict)]:
                peer = [r["tokenizers encode_batch"]["mb_per_s"] for r in these]
                speed = [r[label]["mb_per_s"] for r in these]
                enc = [r["mb"] / r[label]["encode_s"] / p for r, p in zip(these, peer) if r[label].get("encode_s")]
                cpu = [r["tokenizers encode_batch"]["cpu_s"] / r[label]["cpu_s"] for r in these]
                enc_cpu = [r["tokenizers encode_batch"]["cpu_s"] / r[label]["encode_cpu_s"] for r in these
                           if r[label].get("encode_cpu_s")]
                print(f"| {mb} | {label} | {statistics.median(speed):.2f} | "
                      f"{statistics.median(s / p for s, p in zip(speed, peer)):.2f}x | "
                      f"{f'{statistics.median(enc):.2f}x' if enc else '-'} | {statistics.median(cpu):.2f}x | "
                      f"{f'{statistics.median(enc_cpu):.2f}x' if enc_cpu else '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
