"""The data stage at a user's scale: builds an N MB generic corpus of unique documents from real sentences (the
bundled text, recombined with a seed), runs `recipes.prepare` on it in a child process, and prints MB/s,
tokens/s and the child's peak RSS next to the peer measured in the same run on the same text and cores:
Hugging Face `tokenizers`' `encode_batch` with the `tokenizer.json` that prepare produced.

    python -m tools.bench_data --mb 200 [--out /tmp/bench_data] [--vocab 8192]

Prints one line per measure; the ratio is prepare's end-to-end MB/s over encode_batch's MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path


def build_corpus(path: Path, mb: float, seed: int = 0) -> int:
    """A .jsonl of unique documents of 5-40 real sentences each (bundled text, reshuffled) -> its UTF-8 bytes."""
    from mlx_pn.data.sources import load_documents

    sentences = [s.strip() for d in load_documents("bundled:generic") for s in re.split(r"(?<=[.!?])\s+", d.text)
                 if 20 <= len(s.strip()) <= 400]
    rng, size, n = random.Random(seed), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(5, 40)))
            line = json.dumps({"id": f"doc{n}", "text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            size, n = size + len(text.encode()), n + 1
    return size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200, help="MB of generic text to build and prepare")
    ap.add_argument("--out", default="/tmp/bench_data", help="scratch folder (corpus and run)")
    ap.add_argument("--vocab", type=int, default=8192, help="tokenizer pieces (data.vocab_size)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, run = out / f"generic-{args.mb:g}mb.jsonl", out / f"run-{args.mb:g}mb"
    t = time.perf_counter()
    nbytes = build_corpus(corpus, args.mb)
    print(f"corpus      {nbytes / 1e6:.1f} MB of unique documents in {time.perf_counter() - t:.1f} s: {corpus}")
    print(f"load        {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")

    cmd = [sys.executable, "-m", "recipes.prepare", "--config", "tiny", "--out", str(run), "--corpus", "config",
           "--data.generic", str(corpus), "--data.max_docs", "0", "--data.vocab_size", str(args.vocab)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    m = json.loads((run / "data" / "shards" / "generic" / "manifest.json").read_text())
    tokens = sum(s["tokens"] for s in m["splits"].values())
    print(f"prepare     {wall:.1f} s, {nbytes / 1e6 / wall:.2f} MB/s, {tokens / wall / 1e6:.2f}M tokens/s "
          f"({tokens:,} generic tokens; the wall time includes the bundled domains), peak RSS {rss:.0f} MiB")

    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(run / "data" / "tokenizer" / "hf" / "tokenizer.json"))
    t, n = time.perf_counter(), 0
    batch = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 512:
                n += sum(len(e.ids) for e in hf.encode_batch(batch, add_special_tokens=False))
                batch = []
    n += sum(len(e.ids) for e in hf.encode_batch(batch, add_special_tokens=False)) if batch else 0
    peer = time.perf_counter() - t
    print(f"peer        tokenizers encode_batch {peer:.1f} s, {nbytes / 1e6 / peer:.2f} MB/s, "
          f"{n / peer / 1e6:.2f}M tokens/s")
    print(f"ratio       prepare end to end / encode_batch: {peer / wall:.2f}x")
    print(f"load        {os.getloadavg()[0]:.1f} (1-min load average after)")


if __name__ == "__main__":
    main()
