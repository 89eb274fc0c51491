"""mlx-lm's own CLI with and without mlx-pn's BLAS set-up: `python -m mlx_pn.lm CMD` against plain
`python -m mlx_lm CMD`, the same arguments, interleaved rounds, on an exported model.

    python -m tools.bench_lm_cli                               # builds a quickstart-sized model (cpu preset)
    python -m tools.bench_lm_cli --model OUT/export/drama --rounds 3

Without --model it prepares a tokenizer on the bundled text (vocab --vocab, tiny preset's data settings) and
exports a randomly initialised model of --preset with it into a temporary folder (speed does not depend on the
weights). Perplexity runs on the bundled drama text written as an mlx-lm data folder (train.jsonl). Each
command is a fresh process, so the times include start-up and loading (what a user waits for); the printed
ratio is plain mlx_lm's median wall time over mlx_pn.lm's. Perplexity values must agree (same computation).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = {"python -m mlx_lm": ["-m", "mlx_lm"], "python -m mlx_pn.lm": ["-m", "mlx_pn.lm"]}


def make_model(tmp: Path, preset: str, vocab: int) -> Path:
    import mlx_pn  # noqa: F401
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.methods import load_config
    from mlx_pn.models.build import build_model, model_args

    cfg = load_config("tiny", {"out": str(tmp / "run"), "data.vocab_size": str(vocab), "data.max_docs": "300",
                               "model.preset": preset})
    data = prepare_data(cfg, log=lambda *a: None)
    model = build_model(model_args(cfg.model, data.tokenizer.vocab_size), seed=0)
    dest = tmp / "export"
    export_mlx_lm(model, data.tokenizer.hf_dir, dest)
    return dest


def make_data(tmp: Path, docs: int) -> Path:
    folder = tmp / "ppl-data"
    folder.mkdir()
    with gzip.open(REPO / "mlx_pn" / "data" / "bundled" / "drama.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(docs), f)]
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def run(peer: str, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, *PEERS[peer], *args], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{peer} {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    return wall, p.stdout + p.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an exported mlx-lm folder (default: build one of --preset)")
    ap.add_argument("--preset", default="cpu", help="model preset when building one (quickstart's: cpu)")
    ap.add_argument("--vocab", type=int, default=4096, help="tokenizer size when building one (quickstart's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--num-samples", type=int, default=64, help="perplexity: sequences")
    ap.add_argument("--sequence-length", type=int, default=256, help="perplexity: tokens per sequence")
    ap.add_argument("--max-tokens", type=int, default=200, help="generate: tokens")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        model = Path(a.model) if a.model else make_model(tmp, a.preset, a.vocab)
        data = make_data(tmp, 400)
        cmds = {
            "perplexity": ["perplexity", "--model", str(model), "--data-path", str(data), "--num-samples",
                           str(a.num_samples), "--sequence-length", str(a.sequence_length), "--batch-size", "8"],
            "generate": ["generate", "--model", str(model), "--prompt", "KING HENRY.", "--max-tokens",
                         str(a.max_tokens), "--temp", "0"],
        }
        times = {(c, p): [] for c in cmds for p in PEERS}
        outs = {}
        for r in range(a.rounds):
            for c, args in cmds.items():
                for p in (PEERS if r % 2 == 0 else reversed(list(PEERS))):  # interleaved, order alternating
                    wall, out = run(p, args)
                    times[c, p].append(wall)
                    outs.setdefault((c, p), out)
                    print(f"round {r + 1} {c:10s} {p:20s} {wall:7.1f} s", flush=True)
        print(f"\nmodel: {model if a.model else f'{a.preset} preset, vocab {a.vocab} (random weights)'}; "
              f"{a.rounds} rounds; median wall seconds per command (a fresh process each)\n")
        print("| command | python -m mlx_lm | python -m mlx_pn.lm | ratio | same result |")
        print("|---|---|---|---|---|")
        for c in cmds:
            plain, ours = (statistics.median(times[c, p]) for p in PEERS)
            pat = r"Perplexity: ([\d.]+)" if c == "perplexity" else r"==========\n(.*?)\n=========="
            got = [re.search(pat, outs[c, p], re.S) for p in PEERS]
            same = all(got) and got[0].group(1) == got[1].group(1)
            tps = re.findall(r"Generation: \d+ tokens, ([\d.]+) tokens-per-sec", outs[c, "python -m mlx_pn.lm"])
            extra = f" ({got[0].group(1)})" if c == "perplexity" and got[0] else ""
            print(f"| {c} | {plain:.1f} s | {ours:.1f} s | {plain / ours:.2f}x | {same}{extra} |")
            if tps:
                plain_tps = re.findall(r"Generation: \d+ tokens, ([\d.]+) tokens-per-sec", outs[c, "python -m mlx_lm"])
                print(f"|   (generation tokens/s) | {plain_tps[0] if plain_tps else '?'} | {tps[0]} | | |")


if __name__ == "__main__":
    main()
