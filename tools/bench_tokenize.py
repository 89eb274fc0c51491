"""Tokenization throughput (MB of UTF-8 text per second): mlx_pn's SentencePiece path (what the shard
builder uses) next to the Hugging Face `tokenizers` twin it exports (the peer), same text, same run.

    python -m tools.bench_tokenize [--corpus bundled:generic] [--vocab 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="bundled:generic", help="source spec of the text to tokenize")
    ap.add_argument("--vocab", type=int, default=8192, help="SentencePiece vocabulary to train for the test")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (the best one is reported)")
    args = ap.parse_args(argv)

    import mlx_pn  # noqa: F401
    from mlx_pn.data.sources import load_documents
    from mlx_pn.data.tokenizer import train_tokenizer
    from tokenizers import Tokenizer as HFTokenizer

    texts = [d.text for d in load_documents(args.corpus)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tok = train_tokenizer(texts, args.vocab, Path(d) / "tok")
        train_s = time.perf_counter() - t0
        hf = HFTokenizer.from_file(str(tok.hf_dir / "tokenizer.json"))

        def best(fn):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        spm_s = best(lambda: tok.encode_batch(texts))
        hf_s = best(lambda: hf.encode_batch(texts, add_special_tokens=False))
        n_tokens = sum(len(x) for x in tok.encode_batch(texts))
    print(f"{args.corpus}: {len(texts)} documents, {mb:.2f} MB, {n_tokens:,} tokens "
          f"({mb * 1e6 / n_tokens:.2f} bytes/token), {os.cpu_count()} cores")
    print(f"SentencePiece training ({args.vocab} pieces): {train_s:.1f} s")
    print(f"mlx_pn SentencePiece encode_batch : {mb / spm_s:7.2f} MB/s")
    print(f"HF tokenizers encode_batch (peer)  : {mb / hf_s:7.2f} MB/s")
    print(f"ratio mlx_pn / HF tokenizers       : {hf_s / spm_s:.2f}x")


if __name__ == "__main__":
    main()
