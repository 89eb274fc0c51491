"""Parameter counts of the Super Tiny LM variants (tied / untied / shared FFN / shared attention output /
byte-level), at the preset's shape ("parameters saved") and resized to the baseline's parameter count
("equal params"), with the config overrides of each row and its weight-MACs per token.

    python -m tools.stlm_sizes                       # presets tiny (vocab 1024) and cpu (vocab 8192)
    python -m tools.stlm_sizes --preset cpu --vocab 8192 --json runs/stlm/sizes.json
    python -m tools.stlm_sizes --measure --preset tiny --steps 300 --out runs/stlm-measure   # + test bits/byte

--measure trains every row for --steps on the bundled text (the tiny.yaml data settings) and prints the
generic test split's bits per byte (the whole split: exact) next to the counts.
The counts need no data: models are built lazily (no weights are computed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Byte front end per preset: the config defaults (byte_dim 128, one encoder and one decoder block, 16-byte
# chunks) for cpu; tiny is too small for them (its whole embedding is 65k parameters), so 32 wide there.
BYTE = {"tiny": dict(byte_dim=32), "cpu": dict(byte_dim=128)}
VOCAB = {"tiny": 1024, "cpu": 8192}


def count(overrides: dict, preset: str, vocab: int) -> dict:
    """-> {params, non_embedding, macs}: trainable parameters (the byte table is a constant), the same without
    the embedding/head (token) or byte encoder/decoder (byte), and weight multiply-adds per token (each
    weight matrix times the positions it is applied to; attention scores left out)."""
    import mlx_pn  # noqa: F401  (BLAS set-up before mlx.core)
    from mlx_pn.models import byte_lm
    from mlx_pn.models.build import PRESETS, is_byte_args, make_args
    from mlx_pn.models.transformer import Transformer

    args = make_args({**PRESETS[preset], **overrides}, vocab)
    d, L, F = args.hidden_size, args.num_hidden_layers, args.intermediate_size
    attn = d * (args.num_attention_heads + 2 * args.num_key_value_heads) * args.head_dim + d * d
    trunk_macs = L * (attn + 3 * d * F)
    if is_byte_args(args):
        m = byte_lm.Model(args)
        Db, C = args.byte_dim, args.byte_chunk_len
        block = 12 * Db * Db
        macs = trunk_macs + C * block * args.byte_encoder_layers + Db * d  # encoder (per token, no table trick)
        macs += d * Db + C * (block * args.byte_decoder_layers + Db * byte_lm.N_SYMBOLS)  # decoder, teacher-forced
    else:
        m = Transformer(args)  # lazy: the init graph is never evaluated
        macs = trunk_macs + vocab * d  # the head; the embedding is a lookup
    return {"params": m.num_params(), "non_embedding": m.num_params(embeddings=False), "macs": macs}


def _fit(base: int, overrides: dict, knob: str, values, preset: str, vocab: int) -> dict:
    """The value of `knob` (from the sorted `values`; parameters grow with it) whose parameter count is
    closest to `base` (bisection)."""
    values = list(values)
    n = lambda i: count({**overrides, knob: values[i]}, preset, vocab)["params"]  # noqa: E731
    lo, hi = 0, len(values) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n(mid) <= base else (lo, mid)
    best = min((lo, hi), key=lambda i: abs(n(i) - base))
    return {**overrides, knob: values[best]}


def rows(preset: str, vocab: int) -> list[dict]:
    from mlx_pn.models.build import PRESETS

    p = PRESETS[preset]
    L, F = p["num_hidden_layers"], p["intermediate_size"]
    base = count({}, preset, vocab)["params"]
    Fs = range(8, 8 * F, 8)
    byte = {"frontend": "byte", **BYTE.get(preset, {})}
    spec = [
        ("tied (baseline)", {}),
        ("untied", {"tie_word_embeddings": False}),
        ("untied, equal params", _fit(base, {"tie_word_embeddings": False}, "intermediate_size", Fs, preset, vocab)),
        ("share_ffn", {"share_ffn": True}),
        ("share_ffn, equal params (deeper)",
         _fit(base, {"share_ffn": True}, "num_hidden_layers", range(L, 8 * L + 1), preset, vocab)),
        ("share_ffn, equal params (wider FFN)", _fit(base, {"share_ffn": True}, "intermediate_size",
                                                     range(F, 2 * L * F, 8), preset, vocab)),
        ("share_attn_out", {"share_attn_out": True}),
        ("share_attn_out, equal params", _fit(base, {"share_attn_out": True}, "intermediate_size",
                                              range(F, 2 * F, 8), preset, vocab)),
        ("share_ffn + share_attn_out", {"share_ffn": True, "share_attn_out": True}),
        ("byte", byte),
        ("byte, equal params", _fit(base, byte, "intermediate_size", range(8, 4 * F, 8), preset, vocab)),
    ]
    out = []
    for name, ov in spec:
        c = count(ov, preset, vocab)
        out.append({"preset": preset, "vocab": vocab, "variant": name, "overrides": ov, **c,
                    "saved": base - c["params"], "saved_pct": 100.0 * (base - c["params"]) / base})
    return out


def flags(ov: dict) -> str:
    return " ".join(f"--model.{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in ov.items()) or "(preset)"


def table(rs: list[dict], bpb: dict | None = None) -> str:
    head = "| preset | variant | overrides | parameters | non-embedding | saved vs tied (- = added) | weight MACs/token |"
    sep = "|---|---|---|---|---|---|---|"
    if bpb is not None:
        head, sep = head + " test bits/byte |", sep + "---|"
    lines = [head, sep]
    for r in rs:
        line = (f"| {r['preset']} | {r['variant']} | `{flags(r['overrides'])}` | {r['params']:,} | "
                f"{r['non_embedding']:,} | {r['saved']:,} ({r['saved_pct']:.1f}%) | {r['macs']:,} |")
        if bpb is not None:
            v = bpb.get((r["preset"], r["variant"]))
            line += f" {v:.4f} |" if v is not None else " – |"
        lines.append(line)
    return "\n".join(lines)


def test_nll(model, windows, batch: int = 16) -> tuple[float, int]:
    """Summed nats and token count over (N, L + 1) windows. Plain mx ops (not evaluate.nll): the fused
    cross-entropy of train/losses.py fails outside mx.compile in this version (see the issue 8 notes)."""
    import mlx.core as mx
    import mlx.nn as nn

    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = mx.array(windows[i:i + batch].astype("int32"))
        x, y = w[:, :-1], w[:, 1:]
        s = model.nll_sum(x, y) if hasattr(model, "nll_sum") else nn.losses.cross_entropy(
            model(x).astype(mx.float32), y, reduction="sum")
        total += s.item()
        count += y.size
    return total, count


def measure(rs: list[dict], args) -> dict:
    """Train every row for args.steps on the bundled text; -> {(preset, variant): generic test bits/byte}."""
    import dataclasses

    from mlx_pn.config import load_config
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.data.prepare import GENERIC, prepare_data
    from mlx_pn.data.batches import eval_windows
    from mlx_pn.train.evaluate import bits_per_byte
    from mlx_pn.models.build import build_model, model_args
    from mlx_pn.train.loop import RunOptions, train

    out = {}
    for r in rs:
        ov = {"out": args.out, "data.vocab_size": str(r["vocab"]), "model.preset": r["preset"]}
        ov.update({f"model.{k}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in r["overrides"].items()})
        ov["data.max_docs"] = str(args.max_docs)
        cfg = load_config(Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny.yaml", ov)
        data = prepare_data(cfg, log=lambda *a: None)
        t = dataclasses.replace(cfg.pretrain, steps=args.steps, batch_size=args.batch, seq_len=args.seq,
                                warmup=max(1, args.steps // 10), eval_every=args.steps, save_every=args.steps,
                                lr=args.lr, min_lr=args.lr / 10)
        model = build_model(model_args(cfg.model, data.tokenizer.vocab_size), seed=args.seed, tokenizer=data.tokenizer)
        g = data.corpora[GENERIC]
        slug = r["variant"].replace(" ", "_").replace(",", "").replace("(", "").replace(")", "").replace("+", "and")
        res = train(model, t, PackedBatches(g.tokens("train"), t.seq_len, t.batch_size, t.seed, "generic"),
                    Path(args.out) / f"{r['preset']}-{slug}-seed{args.seed}", RunOptions(resume=False),
                    log=lambda *a: None)
        nats, n = test_nll(model, eval_windows(g.tokens("test"), t.seq_len))
        # whole split: the window cut drops < seq_len tokens at the end (bits_per_byte's caveat)
        out[(r["preset"], r["variant"])] = bpb = bits_per_byte(nats / n, n, g.bytes_utf8("test"))
        print(f"{r['preset']:5s} {r['variant']:38s} loss {res.final_loss:.3f}  test bpb {bpb:.4f}  "
              f"({res.wall_s:.0f} s)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help="preset(s) (default: tiny and cpu)")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (default: tiny 1024, cpu 8192)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--measure", action="store_true", help="train each row and report generic test bits/byte")
    ap.add_argument("--steps", type=int, default=300, help="--measure: training steps per row")
    ap.add_argument("--batch", type=int, default=16, help="--measure: sequences per step")
    ap.add_argument("--seq", type=int, default=128, help="--measure: tokens per sequence")
    ap.add_argument("--seed", type=int, default=0, help="--measure: model initialisation seed")
    ap.add_argument("--lr", type=float, default=3e-3, help="--measure: peak learning rate")
    ap.add_argument("--max-docs", type=int, default=0, help="--measure: documents per corpus (0 = all)")
    ap.add_argument("--only", default="", help="--measure: variant names to train, separated by ';' (default all)")
    ap.add_argument("--out", default="runs/stlm-measure", help="--measure: output folder")
    args = ap.parse_args(argv)
    rs = []
    for preset in args.preset or ["tiny", "cpu"]:
        rs += rows(preset, args.vocab or VOCAB.get(preset, 4096))
    bpb = None
    if args.measure:
        todo = [r for r in rs if not args.only or r["variant"] in args.only.split(";")]
        bpb = measure(todo, args)
        for r in rs:
            r["test_bpb"] = bpb.get((r["preset"], r["variant"]))
    print(table(rs, bpb))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rs, indent=2))
    return rs


if __name__ == "__main__":
    main()
