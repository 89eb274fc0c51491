"""Training and generation speed of mlx_pn against peers measured in the same run.

Training (fp32, AdamW, grad clip 1.0, the same fixed batch for everyone; one optimizer step = one timed step,
synchronised with mx.eval / loss.item()): for each preset and method, median step time over interleaved
rounds (every candidate runs `--steps` steps per round, rounds alternate candidates, so load on a shared
machine hits all of them alike), tokens/s, MLX peak memory of one step, and model FLOPs utilisation against
the fp32 matmul rate measured in the same run (6 N + 12 layers d L FLOPs per token, N = matmul parameters
incl. the LM head).

  slm       our Transformer (mlx_pn.models.transformer) in the one loop's compiled step (make_step) with our
            loss (mlx_pn.train.losses.cross_entropy); peers: the same with nn.losses.cross_entropy, the same
            uncompiled, the same with the MLP's fast silu (mlx_pn.models.ops) swapped back for nn.silu, mlx-lm's
            own llama class (mlx_lm.models.llama) in the same step, and the same
            architecture in PyTorch eager and torch.compile (tools/bench_torch_ref.py, a subprocess)
  llm       the same comparison one preset larger (tiny -> cpu -> cpu-large; slm -> llm)
  slm-pn    the projected network, per-sequence routing (h = k) and one cluster per micro-batch (grouped);
            peer: slm
  slm-mix   one expert of the hard mixture (an SLM trained on its cluster: the same step as slm, k of them)
  ab        a short slm table (ours, ours with nn.silu, ours with nn.losses CE, mlx-lm llama as shipped,
            PyTorch): more rounds in the same time
--precision bf16: our step with train.precision bf16 (fp32 master weights) vs PyTorch with bf16 autocast, MFU
against the bf16 matmul rate measured in the run (or --peak-tflops, a datasheet peak). On a GPU (MLX's CUDA or
Metal build; torch on CUDA) the same command measures the GPU: tools/RESULTS.md has the commands.
Generation (`--generate`): tokens/s of greedy decoding through mlx_lm.generate_step, of our model exported
with mlx_pn.export and loaded by mlx_lm.load, vs a freshly built mlx-lm llama of the same size, in fp32, bf16
and 4-bit. Data pipeline (`--pipeline`): time the loop's Prefetcher made the step wait, in a real train() run.

    python -m tools.bench --presets tiny cpu --torch-python /tmp/refvenv/bin/python
    python -m tools.bench --presets cpu --methods slm slm-pn --no-torch     # (was tools/bench_pn_step)
    python -m tools.bench --presets cpu --methods --generate --pipeline    # generation and data only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LARGER = {"tiny": "cpu", "cpu": "cpu-large", "cpu-large": "slm", "slm": "llm"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "cpu"], help="model presets (default: tiny cpu)")
    ap.add_argument("--methods", nargs="*", default=["slm", "llm", "slm-pn", "slm-mix"],
                    help="training rows (default: slm llm slm-pn slm-mix; none: skip training)")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary (default 8192)")
    ap.add_argument("--k", type=int, default=16, help="slm-pn clusters (default 16)")
    ap.add_argument("--grouped-h", type=int, default=8, help="slm-pn basis size of the grouped row (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per candidate per round (default 3)")
    ap.add_argument("--torch-python", default=None,
                    help="a python with torch for the PyTorch peer (default: this one if torch imports)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--no-torch-compile", action="store_true", help="PyTorch eager only (compiling takes ~30 s)")
    ap.add_argument("--generate", action="store_true", help="also measure generation through mlx_lm")
    ap.add_argument("--gen-tokens", type=int, default=64, help="generated tokens per run (default 64)")
    ap.add_argument("--gen-repeats", type=int, default=5, help="interleaved generation runs per candidate (default 5)")
    ap.add_argument("--pipeline", action="store_true", help="also measure the data pipeline in a train() run")
    ap.add_argument("--threads", type=int, default=0,
                    help="BLAS / PyTorch threads for both sides (default: each library's own, = cores); 1 gives a "
                         "per-core comparison that a busy shared machine distorts less")
    ap.add_argument("--json", default=None, help="write every measurement to this file")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="training rows: our train.precision and PyTorch's autocast dtype (default fp32)")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="MFU denominator in TFLOP/s (e.g. the GPU's dense bf16 peak); default: the matmul rate "
                         "measured in this run")
    args = ap.parse_args(argv)
    if args.threads:  # before mlx_pn loads OpenBLAS; the torch worker reads the same variables
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import mlx_pn  # noqa: F401  (BLAS set-up before mlx.core)
    import mlx.core as mx

    report = {"argv": sys.argv[1:], "mlx": mx.__version__, "device": str(mx.default_device()),
              "load_avg_start": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d"), "train": [], "generate": [], "pipeline": None}
    peak = matmul_peak(dtype=args.precision)
    report["matmul_gflops"] = peak / 1e9
    print(f"{args.precision} matmul peak (MLX, n=2048, this run): {peak / 1e9:.1f} GFLOP/s")
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12
    print(f"MFU denominator: {peak / 1e12:.3f} TFLOP/s")
    tp = None if args.no_torch else torch_python(args.torch_python)
    if not args.no_torch and tp is None:
        print("PyTorch peer: torch does not import here; pass --torch-python PATH (e.g. a venv with torch)")

    for preset in args.presets:
        if args.methods:
            report["train"] += bench_training(preset, args, peak, tp)
    if args.generate:
        for preset in args.presets:
            report["generate"] += bench_generation(preset, args)
    if args.pipeline:
        report["pipeline"] = bench_pipeline(args)
    report["load_avg_end"] = os.getloadavg()
    print(f"load average (1 min) at start / end: {report['load_avg_start'][0]:.1f} / {report['load_avg_end'][0]:.1f} "
          f"on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


# ---------------------------------------------------------------------------------------------------- helpers
def matmul_peak(n: int = 2048, reps: int = 5, dtype: str = "fp32") -> float:
    import mlx.core as mx
    import numpy as np

    dt = mx.bfloat16 if dtype == "bf16" else mx.float32
    a, b = mx.random.normal((n, n)).astype(dt), mx.random.normal((n, n)).astype(dt)
    mx.eval(a @ b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        mx.eval(a @ b)
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(ts))


def run_rounds(jobs, times: dict, rounds: int, steps: int, measure_peak=None, peak: float = 0.0):
    """Interleaved rounds: every job (name, run(steps) -> step times) once a round, the order rotated every round,
    and measure_peak() (the matmul rate) between them -> ({name: per-round median step}, the best peak seen,
    `peak` included). times[name] gets every step time."""
    import numpy as np

    per_round = {name: [] for name in times}
    for r in range(rounds):
        # rotate the order every round: no candidate always follows the same one (e.g. PyTorch, whose
        # OpenMP threads keep spinning for a while after a step)
        for name, run in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            ts = run(steps)
            times[name] += ts
            per_round[name].append(float(np.median(ts)))
        if measure_peak is not None:
            peak = max(peak, measure_peak())
    return per_round, peak


def torch_python(choice: str | None) -> str | None:
    if choice:
        return choice
    return sys.executable if importlib.util.find_spec("torch") else None


def model_flops_per_token(args, seq: int) -> float:
    """6 N + 12 layers d L (PaLM's count; N = matmul parameters: attention, MLP and the LM head)."""
    D, F, n = args.hidden_size, args.intermediate_size, args.num_hidden_layers
    Dkv = args.num_key_value_heads * args.head_dim
    N = n * (2 * D * D + 2 * D * Dkv + 3 * D * F) + args.vocab_size * D
    return 6 * N + 12 * n * D * seq


class TorchPeer:
    """tools/bench_torch_ref.py as a persistent subprocess: built and warmed once, then asked for N steps of a
    mode between our own rounds."""

    def __init__(self, python: str, job: dict):
        script = Path(__file__).with_name("bench_torch_ref.py")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.p = subprocess.Popen([python, str(script), "--json", json.dumps(job)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"torch peer ({python}) failed:\n{self.p.stderr.read()[-3000:]}")
        self.info = json.loads(line)

    def run(self, mode: str, n: int) -> list[float]:
        self.p.stdin.write(f"{mode} {n}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"torch peer died:\n{self.p.stderr.read()[-3000:]}")
        return [t / 1e3 for t in json.loads(line)]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def mlx_candidate(model, loss_fn, batch, extras=(), compile=True, plain_silu=False, precision="fp32"):
    """-> (run(n) -> step times in s, peak step memory in bytes) for one model in the loop's own step.

    plain_silu: trace the step with the trunk's fast silu (mlx_pn.models.ops.swiglu_silu) replaced by nn.silu (the
    MLP as it was before the fast silu was wired in; compiled steps only). precision: train.precision."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_pn.models import transformer
    from mlx_pn.train.step import compute_dtype

    from mlx_pn.config import TrainConfig
    from mlx_pn.train.step import make_step
    from mlx_pn.train.optim import make_optimizer

    opt = make_optimizer(TrainConfig(steps=10_000, warmup=10))
    opt.init(model.trainable_parameters())
    step = make_step(model, opt, loss_fn, 1, 1.0, compile, dtype=compute_dtype(precision))

    def one():
        loss, gnorm = step(batch, *extras)
        mx.eval(loss, gnorm, model.state, opt.state)
        return loss.item()

    original = transformer.swiglu_silu
    if plain_silu:
        transformer.swiglu_silu = nn.silu
    try:
        for _ in range(3):  # compile (trace) and warm up
            one()
    finally:
        transformer.swiglu_silu = original
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    one()
    mem = mx.get_peak_memory() - before

    def run(n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            one()
            out.append(time.perf_counter() - t)
        return out

    return run, mem


def mlx_lm_llama(margs):
    """mlx-lm's own llama class with our architecture (same parameter names and init scale)."""
    import mlx.core as mx
    from mlx_lm.models import llama

    from mlx_pn.models.transformer import init_trunk_weights

    cfg = dict(model_type="llama", hidden_size=margs.hidden_size, num_hidden_layers=margs.num_hidden_layers,
               intermediate_size=margs.intermediate_size, num_attention_heads=margs.num_attention_heads,
               num_key_value_heads=margs.num_key_value_heads, rms_norm_eps=margs.rms_norm_eps,
               vocab_size=margs.vocab_size, rope_theta=margs.rope_theta, rope_traditional=False,
               tie_word_embeddings=margs.tie_word_embeddings, max_position_embeddings=margs.max_position_embeddings)
    mx.random.seed(0)
    m = llama.Model(llama.ModelArgs.from_dict(cfg))
    init_trunk_weights(m, margs.num_hidden_layers)
    mx.eval(m.parameters())
    return m, cfg


# ---------------------------------------------------------------------------------------------------- training
def bench_training(preset: str, args, peak: float, tp: str | None) -> list[dict]:
    import mlx.core as mx
    import numpy as np

    from mlx_pn.models.build import PRESETS, build_model
    from mlx_pn.models.projected import ProjectedArgs, build_projected
    from mlx_pn.models.transformer import ModelArgs
    from mlx_pn.train.losses import cross_entropy, reference_cross_entropy

    B, L, V = args.batch, args.seq, args.vocab
    prec = args.precision
    rng = np.random.default_rng(0)
    batch = mx.array(rng.integers(0, V, (1, B, L + 1)).astype(np.int32))
    tokens = B * L
    rows: list[dict] = []
    groups = []  # (method, preset, margs, {name: runner}, torch peer or None)
    for method in args.methods:
        p = LARGER[preset] if method == "llm" else preset
        margs = ModelArgs(**PRESETS[p], vocab_size=V)
        cands = {}
        if method in ("slm", "llm"):
            cands["mlx_pn (ours)"] = mlx_candidate(build_model(margs), cross_entropy, batch, precision=prec)
            cands["mlx_pn, nn.silu (before the fast silu)"] = mlx_candidate(build_model(margs), cross_entropy,
                                                                            batch, plain_silu=True, precision=prec)
            cands["mlx_pn, nn.losses CE"] = mlx_candidate(build_model(margs), reference_cross_entropy, batch,
                                                          precision=prec)
            cands["mlx_pn, not compiled"] = mlx_candidate(build_model(margs), cross_entropy, batch, compile=False,
                                                          precision=prec)
            cands["mlx-lm llama, our loss"] = mlx_candidate(mlx_lm_llama(margs)[0], cross_entropy, batch)
            cands["mlx-lm llama, nn.losses CE"] = mlx_candidate(mlx_lm_llama(margs)[0], reference_cross_entropy,
                                                                batch)
        elif method == "ab":  # the headline pairs only (more rounds in the same time)
            cands["mlx_pn (ours)"] = mlx_candidate(build_model(margs), cross_entropy, batch, precision=prec)
            cands["mlx_pn, nn.silu (before the fast silu)"] = mlx_candidate(build_model(margs), cross_entropy,
                                                                            batch, plain_silu=True, precision=prec)
            cands["mlx_pn, nn.losses CE"] = mlx_candidate(build_model(margs), reference_cross_entropy, batch,
                                                          precision=prec)
            cands["mlx-lm llama, nn.losses CE"] = mlx_candidate(mlx_lm_llama(margs)[0], reference_cross_entropy,
                                                                batch, precision=prec)
        elif method == "slm-pn":
            ids = mx.array(rng.integers(0, args.k, (1, B)).astype(np.int32))
            cands["slm (peer)"] = mlx_candidate(build_model(margs), cross_entropy, batch)
            cands[f"slm-pn per sequence, k={args.k} h={args.k}"] = mlx_candidate(
                build_projected(margs, ProjectedArgs(k=args.k)), cross_entropy, batch, (ids,))
            cands[f"slm-pn grouped, k={args.k} h={args.grouped_h}"] = mlx_candidate(
                build_projected(margs, ProjectedArgs(k=args.k, h=args.grouped_h)), cross_entropy, batch,
                (mx.array([3], dtype=mx.int32),))
        elif method == "slm-mix":
            cands["slm (peer)"] = mlx_candidate(build_model(margs), cross_entropy, batch)
            cands["slm-mix, one expert"] = mlx_candidate(build_model(margs, seed=1), cross_entropy, batch)
        torch_peer = None
        if tp and method in ("slm", "llm", "ab"):
            job = dict(margs.to_dict(), batch=B, seq=L, warmup=3, threads=args.threads, precision=prec,
                       modes=["eager"] + ([] if args.no_torch_compile else ["compile"]))
            print(f"[{preset} {method}] starting the PyTorch peer (torch.compile warm-up ~30 s) ...", flush=True)
            torch_peer = TorchPeer(tp, job)
            for mode, err in torch_peer.info["errors"].items():
                print(f"  torch {mode}: {err}")
        groups.append((method, p, margs, cands, torch_peer))

    for method, p, margs, cands, torch_peer in groups:
        times = {name: [] for name in cands}
        tmodes = [] if torch_peer is None else list(torch_peer.info["warmup_s"])  # the modes that built
        for m in tmodes:
            times[f"PyTorch {torch_peer.info['torch']} {m}"] = []
        jobs = [(name, run) for name, (run, _) in cands.items()]
        jobs += [(f"PyTorch {torch_peer.info['torch']} {m}", lambda n, m=m: torch_peer.run(m, n)) for m in tmodes]
        # the matmul peak is measured again in every round (unless --peak-tflops gave one), the best kept: once
        # before the rounds, on a loaded machine, it read low and MFU came out at 215%
        measure = None if args.peak_tflops else (lambda: matmul_peak(reps=3, dtype=args.precision))
        per_round, peak = run_rounds(jobs, times, args.rounds, args.steps, measure, peak)
        if torch_peer:
            torch_peer.close()
        fpt = model_flops_per_token(margs, L)
        print(f"MFU denominator for this group: {peak / 1e12:.3f} TFLOP/s"
              + ("" if args.peak_tflops else " (the best matmul rate measured so far, between the rounds)"))
        ref_name = next(iter(cands))
        ref = float(np.median(times[ref_name]))
        print(f"\n### {method} ({p}: d={margs.hidden_size}, {margs.num_hidden_layers} layers, "
              f"F={margs.intermediate_size}, V={V}), B={B}, L={L}, {prec}, {args.rounds} rounds x {args.steps} steps, "
              f"{mx.default_device()}" + (f"; torch on {torch_peer.info['device']}" if torch_peer else ""))
        print(f"| candidate | step ms (median) | tokens/s | MFU | MLX peak step MB | step / {ref_name}'s "
              f"(ratio of medians) | same, median of per-round ratios |")
        print("|---|---|---|---|---|---|---|")
        for name, ts in times.items():
            med = float(np.median(ts))
            paired = float(np.median(np.array(per_round[name]) / np.array(per_round[ref_name])))
            mem = cands[name][1] / 2**20 if name in cands else None
            if name not in cands and torch_peer:  # torch's own CUDA peak (none on a CPU)
                mem = torch_peer.info.get("peak_mb", {}).get(name.rsplit(" ", 1)[-1])
            row = dict(preset=p, method=method, candidate=name, step_ms=med * 1e3, tokens_per_s=tokens / med,
                       mfu=fpt * tokens / med / peak, peak_step_mb=mem, ratio_vs_first=med / ref,
                       paired_ratio_vs_first=paired, batch=B, seq=L, vocab=V, samples=len(ts))
            rows.append(row)
            print(f"| {name} | {med * 1e3:.1f} | {tokens / med:,.0f} | {row['mfu'] * 100:.1f}% | "
                  f"{'–' if mem is None else f'{mem:.0f}'} | {med / ref:.2f}x | {paired:.2f}x |")
        print("(> 1: the first row is faster. Per-round ratios compare neighbouring measurements, which a drifting "
              "load on a shared machine distorts less)", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------- generation
def _word_tokenizer(vocab: int, folder: Path) -> None:
    """A throwaway word-level tokenizer.json of `vocab` ids (export checks the size; generation uses ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w2", bos_token="w1").save_pretrained(str(folder))


def _decode_rate(model, prompt, n: int) -> float:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    t, count = None, 0
    for tok, _ in generate_step(prompt, model, max_tokens=n, sampler=lambda x: mx.argmax(x, axis=-1)):
        count += 1
        if count == 1:
            t = time.perf_counter()  # after the prompt: decode speed only
    return (count - 1) / (time.perf_counter() - t)


def bench_generation(preset: str, args) -> list[dict]:
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm import load

    from mlx_pn.export import export_mlx_lm
    from mlx_pn.models.build import PRESETS, build_model
    from mlx_pn.models.transformer import ModelArgs

    margs = ModelArgs(**PRESETS[preset], vocab_size=args.vocab)
    rows = []
    prompt = mx.array(np.random.default_rng(0).integers(3, args.vocab, 32).astype(np.int32))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _word_tokenizer(args.vocab, tmp / "tok")
        ours = build_model(margs)
        cands = {}
        for dtype, q in (("float32", None), ("bfloat16", None), ("float32", 4)):
            label = f"{dtype if q is None else f'{q}-bit'}"
            out = tmp / f"export-{label}"
            export_mlx_lm(ours, tmp / "tok", out, quantize=q, dtype=dtype, verify=False)
            exported, _ = load(str(out))
            peer, cfg = mlx_lm_llama(margs)
            peer.set_dtype(getattr(mx, dtype))
            if q:
                nn.quantize(peer, group_size=64, bits=q)
            mx.eval(peer.parameters())
            cands[label] = {"mlx_pn export via mlx_lm.load": exported, "mlx-lm llama (peer)": peer}
        for label, models in cands.items():
            times = {name: [] for name in models}
            order = list(models.items())
            for r in range(args.gen_repeats):
                for name, m in order[r % 2:] + order[:r % 2]:  # alternate which one goes first
                    times[name].append(_decode_rate(m, prompt, args.gen_tokens))
            peer_rate = float(np.median(times["mlx-lm llama (peer)"]))
            for name, rs in times.items():
                rate = float(np.median(rs))
                rows.append(dict(preset=preset, dtype=label, candidate=name, tokens_per_s=rate,
                                 ratio_vs_peer=rate / peer_rate))
    print(f"\n### generation, {preset} (V={args.vocab}), greedy, 32-token prompt, {args.gen_tokens} new tokens, "
          f"median of {args.gen_repeats} interleaved runs")
    print("| weights | candidate | decode tokens/s | / peer |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['candidate']} | {r['tokens_per_s']:.1f} | {r['ratio_vs_peer']:.2f}x |")
    return rows


# ---------------------------------------------------------------------------------------------------- data
def bench_pipeline(args, steps: int = 30) -> dict:
    import mlx.core as mx  # noqa: F401
    import numpy as np

    from mlx_pn.config import TrainConfig
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.models.build import PRESETS, build_model
    from mlx_pn.models.transformer import ModelArgs
    from mlx_pn.train.loop import train

    preset = args.presets[0]
    margs = ModelArgs(**PRESETS[preset], vocab_size=args.vocab)
    tokens = np.random.default_rng(0).integers(0, args.vocab, 4_000_000).astype(np.int32)
    batches = PackedBatches(tokens, args.seq, args.batch, seed=0)
    t = time.perf_counter()
    for i in range(20):
        batches.batch(i)
    build = (time.perf_counter() - t) / 20
    cfg = TrainConfig(steps=steps, batch_size=args.batch, seq_len=args.seq, warmup=3, log_every=steps,
                      eval_every=10**9, save_every=10**9, keep_checkpoints=1)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(build_model(margs), cfg, batches, tmp, log=lambda *a: None)
    wait = r.data_wait_s
    res = dict(preset=preset, steps=steps, wall_s=r.wall_s, data_wait_s=wait, batch_build_ms=build * 1e3,
               step_ms=r.wall_s / steps * 1e3)
    print(f"\n### data pipeline ({preset}, B={args.batch}, L={args.seq}, {steps} steps of train(), compiled)")
    print(f"batch build {build * 1e3:.2f} ms (in the prefetch thread) vs step {res['step_ms']:.0f} ms; "
          f"the loop waited {wait:.3f} s of {r.wall_s:.1f} s ({wait / r.wall_s * 100:.2f}%), "
          f"the first batch included")
    return res


if __name__ == "__main__":
    main()
