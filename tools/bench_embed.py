"""Sentence-embedding throughput and agreement on real bundled text (mlx_pn.clustering.embed).

Throughput, in windows/s at 128 and 256 tokens ([CLS] ... [SEP] included), same windows and batch size:
  - MiniLM in MLX (MiniLMEmbedder), fp32;
  - the same model in PyTorch on the CPU (sentence-transformers), in a subprocess run by a Python that
    has torch and sentence-transformers (``--torch-python``; the project venv must not hold torch);
  - StaticEmbedder.
Agreement of StaticEmbedder with MiniLM on the same windows, at each length:
  (a) NMI between k-means clusterings (k = number of domains) of the two embeddings, and of each vs the
      domain labels; (b) mean over windows of the Spearman correlation between the two embeddings'
      cosine similarities to all other windows (i.e. how alike the two neighbour rankings are).
Also the max |MLX - torch| over the windows, a correctness check on real text.

Windows: ``--n`` windows split evenly over the bundled domains (legal, medical, drama, generic), each a
run of consecutive word pieces of one document cut at word-piece boundaries, drawn with a fixed seed.

    python -m tools.bench_embed                                       # MLX + static only
    python -m tools.bench_embed --torch-python /tmp/refvenv/bin/python   # + torch (see
                                      # tests/fixtures/make_minilm_reference.py for that venv)

Takes ~3-4 minutes with torch at --n 300 on a 2-core CPU. k-means (k-means++, 10 restarts) and NMI
(arithmetic normalisation, as scikit-learn's default) are implemented here in numpy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOMAINS = ("legal", "medical", "drama", "generic")

TORCH_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import numpy as np, torch
from sentence_transformers import SentenceTransformer
job = json.load(open(sys.argv[1]))
model = SentenceTransformer(job["model_dir"], device="cpu"); model.eval()
res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rates": {}}
vecs = {}
with torch.no_grad():
    for L, texts in job["windows"].items():
        model.max_seq_length = int(L)
        model.encode(texts[: job["batch_size"]], batch_size=job["batch_size"])   # warm-up
        t = time.perf_counter()
        v = model.encode(texts, batch_size=job["batch_size"], convert_to_numpy=True)
        res["rates"][L] = len(texts) / (time.perf_counter() - t)
        vecs["v" + L] = v.astype(np.float32)
np.savez(sys.argv[2], **vecs)
print(json.dumps(res))
"""


def make_windows(n: int, tokens: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` text windows of exactly ``tokens - 2`` word pieces (+ [CLS]/[SEP] = ``tokens``), evenly from
    DOMAINS; returns (texts, domain labels). Documents shorter than one window give none."""
    from tokenizers import Tokenizer

    from mlx_pn.clustering.embed import find_minilm_dir
    from mlx_pn.data.sources import load_documents

    tok = Tokenizer.from_file(str(find_minilm_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    body = tokens - 2
    texts, labels = [], []
    for label, dom in enumerate(DOMAINS):
        docs = [d.text for d in load_documents(f"bundled:{dom}")]
        cands = []
        for text, enc in zip(docs, tok.encode_batch(docs, add_special_tokens=False)):
            offs = enc.offsets
            for s in range(0, len(offs) - body + 1, body):
                end = offs[s + body][0] if s + body < len(offs) else len(text)
                cands.append(text[offs[s][0]: end])
        want = n // len(DOMAINS) + (label < n % len(DOMAINS))
        picked = random.Random(f"{seed}/{dom}/{tokens}").sample(cands, min(want, len(cands)))
        texts += picked
        labels += [label] * len(picked)
    return texts, labels


# -- metrics (numpy) ---------------------------------------------------------------------------------
def kmeans(x, k: int, n_init: int = 10, iters: int = 100, seed: int = 0):
    """Lloyd's k-means with k-means++ starts; the labels of the lowest-inertia run."""
    import numpy as np

    rng = np.random.default_rng(seed)
    best, best_labels = np.inf, None
    for _ in range(n_init):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = ((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(axis=1)
            centres.append(x[rng.choice(len(x), p=d / d.sum())])
        c = np.array(centres)
        for _ in range(iters):
            d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            a = d.argmin(axis=1)
            new = np.array([x[a == j].mean(axis=0) if (a == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = d[np.arange(len(x)), a].sum()
        if inertia < best:
            best, best_labels = inertia, a
    return best_labels


def nmi(a, b) -> float:
    """Normalised mutual information, arithmetic mean of the entropies (sklearn's default)."""
    import numpy as np

    _, ai = np.unique(np.asarray(a), return_inverse=True)
    _, bi = np.unique(np.asarray(b), return_inverse=True)
    p = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(p, (ai, bi), 1.0 / len(ai))
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum()
    ha, hb = -(pa * np.log(pa)).sum(), -(pb * np.log(pb)).sum()
    return 1.0 if ha + hb == 0 else float(2 * mi / (ha + hb))


def mean_spearman(a, b) -> float:
    """Mean over rows i of Spearman(cos(a_i, a_j), cos(b_i, b_j)) over j != i."""
    import numpy as np

    n = len(a)
    off = ~np.eye(n, dtype=bool)
    ranks = []
    for m in (a @ a.T, b @ b.T):
        m = m[off].reshape(n, n - 1)
        r = np.argsort(np.argsort(m, axis=1), axis=1).astype(np.float64)
        ranks.append(r - r.mean(axis=1, keepdims=True))
    ra, rb = ranks
    return float(np.mean((ra * rb).sum(1) / np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))))


# -- runs -----------------------------------------------------------------------------------------------
def rate(embedder, texts, batch_size):
    embedder.embed(texts[:batch_size], batch_size=batch_size)  # warm-up
    t = time.perf_counter()
    v = embedder.embed(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t), v


def torch_python(choice: str | None) -> str | None:
    if choice:
        return choice
    if importlib.util.find_spec("torch") and importlib.util.find_spec("sentence_transformers"):
        return sys.executable
    return None


def run_torch(python: str, model_dir: Path, windows: dict, batch_size: int):
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "vecs.npz"
        job.write_text(json.dumps({"model_dir": str(model_dir), "batch_size": batch_size,
                                   "windows": {str(k): v for k, v in windows.items()}}))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_PRELOAD")}
        p = subprocess.run([python, "-c", TORCH_WORKER, str(job), str(out)], capture_output=True, text=True,
                           env=env)
        if p.returncode != 0:
            raise SystemExit(f"torch worker ({python}) failed:\n{p.stderr[-3000:]}")
        import numpy as np

        res = json.loads(p.stdout.strip().splitlines()[-1])
        z = np.load(out)
        res["vectors"] = {int(k[1:]): z[k] for k in z.files}
        return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_embed", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="windows per length (default 300)")
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 256], help="window lengths (default 128 256)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size for MLX and torch (default 32)")
    ap.add_argument("--torch-python", default=None,
                    help="a python with torch + sentence-transformers (default: this one if it has them)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import mlx_pn  # noqa: F401  (optimized BLAS before mlx.core)
    import numpy as np

    from mlx_pn.clustering.embed import MiniLMEmbedder, StaticEmbedder, find_minilm_dir

    model_dir = find_minilm_dir()
    windows = {L: make_windows(args.n, L, args.seed) for L in args.tokens}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"mlx_pn BLAS: {mlx_pn.BLAS}; {os.cpu_count()} CPUs (1-min load {load:.1f}: other processes skew "
          f"the rates); batch size {args.batch_size}; domains {', '.join(DOMAINS)}")
    results: dict = {"batch_size": args.batch_size, "blas": mlx_pn.BLAS, "lengths": {}}

    tp = None if args.no_torch else torch_python(args.torch_python)
    torch_res = None
    if tp:
        print(f"torch: running sentence-transformers with {tp} ...", flush=True)
        torch_res = run_torch(tp, model_dir, {L: w[0] for L, w in windows.items()}, args.batch_size)
        print(f"torch {torch_res['torch']}, {torch_res['threads']} threads")
    elif not args.no_torch:
        print("torch: not importable here; pass --torch-python /path/to/python (a venv with torch and "
              "sentence-transformers) to compare")

    for L in args.tokens:
        texts, labels = windows[L]
        labels = np.array(labels)
        k = len(set(labels.tolist()))
        print(f"\n== {L}-token windows: {len(texts)} ({', '.join(f'{DOMAINS[i]} {(labels == i).sum()}' for i in range(k))})",
              flush=True)
        r_mlx, v_mlx = rate(MiniLMEmbedder(max_tokens=L), texts, args.batch_size)
        static = StaticEmbedder(max_tokens=L)
        r_static, v_static = rate(static, texts, args.batch_size)
        row = {"n": len(texts), "minilm_mlx_wps": r_mlx, "static_wps": r_static}
        print(f"MiniLM MLX       {r_mlx:9.2f} windows/s")
        if torch_res:
            r_torch = torch_res["rates"][str(L)]
            diff = float(np.abs(torch_res["vectors"][L] - v_mlx).max())
            row.update(minilm_torch_wps=r_torch, max_abs_diff_mlx_torch=diff)
            print(f"MiniLM torch CPU {r_torch:9.2f} windows/s")
        print(f"Static           {r_static:9.2f} windows/s")
        if torch_res:
            print(f"ratio MLX/torch     @{L}: {r_mlx / r_torch:7.3f}x   (max |MLX - torch| = {diff:.1e})")
        print(f"ratio static/MLX    @{L}: {r_static / r_mlx:7.1f}x")
        if torch_res:
            print(f"ratio static/torch  @{L}: {r_static / r_torch:7.1f}x")

        km_m, km_s = kmeans(v_mlx, k), kmeans(v_static, k)
        row.update(nmi_static_vs_minilm=nmi(km_s, km_m), nmi_minilm_vs_domains=nmi(km_m, labels),
                   nmi_static_vs_domains=nmi(km_s, labels), spearman_static_vs_minilm=mean_spearman(v_static, v_mlx))
        print(f"k-means k={k}: NMI(static, MiniLM) {row['nmi_static_vs_minilm']:.3f}; vs domains: "
              f"MiniLM {row['nmi_minilm_vs_domains']:.3f}, static {row['nmi_static_vs_domains']:.3f} "
              f"(ratio static/MiniLM {row['nmi_static_vs_domains'] / row['nmi_minilm_vs_domains']:.3f})")
        print(f"mean Spearman of cosine rankings, static vs MiniLM: {row['spearman_static_vs_minilm']:.3f}")
        results["lengths"][L] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
