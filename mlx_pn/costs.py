"""FLOPs of every stage of every method, counted from the model configs and the tokens processed.

The paper budgets in A100 hours; here the unit is FLOPs (hardware-independent) with the measured wall
seconds beside them. Counting conventions (the PaLM / Chinchilla ones, so MFU figures compare):

- forward FLOPs per token = 2 x (every matmul weight the token meets: q, k, v, o, gate, up, down per
  layer and the V x d output head) + 4 x L x d per layer for the attention scores and the weighted sum
  over a context of L tokens (counted in full, as dense kernels compute it, not halved for causality);
  embeddings lookups, norms, activations and the softmax are not counted (< 1% at these sizes);
- training = 3 x forward (the backward pass costs two forwards);
- a layer whose weights are shared (STLM) still costs its FLOPs in every layer: sharing saves
  parameters, not compute;
- projected networks add the materialisation W_b = sum_r alpha_br T_r of the three MLP matrices per
  layer: 2 x h x 3 x d x F per routed unit (a sequence, or a micro-batch when grouped), x 3 in training;
- C_total(N) = C_pretrain + N x C_specialize (the paper's Eq. 1).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path


def forward_flops_per_token(args, seq_len: int) -> float:
    """One token through the model (ModelArgs or any args with the llama field names), context seq_len."""
    d, n_layers, f, v = args.hidden_size, args.num_hidden_layers, args.intermediate_size, args.vocab_size
    kv = args.num_key_value_heads * (d // args.num_attention_heads)
    proj = 2 * (d * d + 2 * d * kv + d * d)  # q, k, v (GQA: kv wide), o
    scores = 4 * seq_len * d  # q.k over L keys and the weighted sum of L values, every head
    mlp = 2 * 3 * d * f
    trunk = n_layers * (proj + scores + mlp)
    if getattr(args, "frontend", "token") == "byte":
        return float(trunk + byte_frontend_flops_per_token(args))
    return float(trunk + 2 * d * v)


def byte_frontend_flops_per_token(args) -> float:
    """The byte model's encoder and (teacher-forced) decoder instead of the embedding and head: C byte positions
    per token, blocks of width Db (q, k, v, o and a 4 Db MLP: 12 Db^2 weights, scores over the C positions), the
    Db -> d pooling projection, the d -> Db decoder input and the Db -> symbols output (mlx_pn.models.byte_lm)."""
    from mlx_pn.models.byte_lm import N_SYMBOLS

    C, Db, d = args.byte_chunk_len, args.byte_dim, args.hidden_size
    block = 2 * 12 * Db * Db + 4 * C * Db  # per byte position
    encoder = C * block * args.byte_encoder_layers + 2 * Db * d
    decoder = 2 * d * Db + C * (block * args.byte_decoder_layers + 2 * Db * N_SYMBOLS)
    return float(encoder + decoder)


def train_flops_per_token(args, seq_len: int) -> float:
    return 3.0 * forward_flops_per_token(args, seq_len)


def projection_flops_per_token(args, h: int, seq_len: int, tokens_per_unit: int, training: bool = True) -> float:
    """Materialising one SLM's MLP weights from h basis matrices, spread over the tokens of one routed unit
    (seq_len for per-sequence routing, batch_size * seq_len when a micro-batch shares its cluster)."""
    per_unit = 2.0 * h * 3 * args.hidden_size * args.intermediate_size * args.num_hidden_layers
    return (3.0 if training else 1.0) * per_unit / tokens_per_unit


@dataclass
class StageCost:
    """What one stage cost: FLOPs counted, tokens processed, wall seconds measured (None: not measured)."""

    flops: float = 0.0
    tokens: int = 0
    wall_s: float | None = None

    def __add__(self, other: "StageCost") -> "StageCost":
        wall = None if self.wall_s is None and other.wall_s is None else (self.wall_s or 0.0) + (other.wall_s or 0.0)
        return StageCost(self.flops + other.flops, self.tokens + other.tokens, wall)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "StageCost":
        return cls(**d) if d else cls()


def training_cost(args, tokens: int, seq_len: int, wall_s: float | None = None, extra_per_token: float = 0.0
                  ) -> StageCost:
    """Cost of training `args` on `tokens` tokens (plus extra_per_token, e.g. a projection)."""
    return StageCost((train_flops_per_token(args, seq_len) + extra_per_token) * tokens, int(tokens), wall_s)


def forward_cost(args, tokens: int, seq_len: int, wall_s: float | None = None) -> StageCost:
    """Cost of running `args` forward only (evaluation, a distillation teacher) over `tokens` tokens."""
    return StageCost(forward_flops_per_token(args, seq_len) * tokens, int(tokens), wall_s)


def c_total(pretrain: float, specialize: float, n_domains: int | float) -> float:
    """Eq. 1 of the paper: the generic cost is paid once, the specialization cost once per domain."""
    return pretrain + n_domains * specialize


def inference_flops_per_token(args, context: int) -> float:
    """Generating one token with a context of `context` tokens (KV cache: one forward of one token)."""
    return forward_flops_per_token(args, context)


# ---------------------------------------------------------------------------------------------------- wall time
# FLOPs are what the comparison matches; wall time is what a user plans with. It is predicted from a training
# rate measured on this machine (a few timed steps of the grid's small model at its batch shape), cached in the
# run folder per machine and shape, so a grid prints "about N hours on this machine" before it starts.
RATE_FILE = "machine_rate.json"  # under OUT/costs/


def machine_key() -> dict:
    """What a measured rate depends on besides the model: the host, its cores, MLX and its device."""
    import os
    import platform

    import mlx.core as mx

    return {"host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(), "mlx": mx.__version__,
            "device": str(mx.default_device())}


def measure_train_rate(args, seq_len: int, batch_size: int, precision: str = "auto", compile: bool = True,
                       steps: int = 3) -> float:
    """Training FLOP/s (train_flops_per_token counting) of `args` on this machine: the loop's own step
    (mlx_pn.train.step.make_step) on a random (batch_size, seq_len) batch, median of `steps` timed steps after two
    warm-up ones (the first traces and, with compile on a CPU, runs the compiler)."""
    import mlx.core as mx
    import numpy as np

    from mlx_pn.config import TrainConfig
    from mlx_pn.models.build import build_model
    from mlx_pn.train.step import compute_dtype, make_step
    from mlx_pn.train.losses import cross_entropy
    from mlx_pn.train.optim import make_optimizer

    model = build_model(args)
    opt = make_optimizer(TrainConfig(steps=1000, warmup=10))
    opt.init(model.trainable_parameters())
    step = make_step(model, opt, cross_entropy, 1, 1.0, compile, dtype=compute_dtype(precision))
    rng = np.random.default_rng(0)
    batch = mx.array(rng.integers(0, args.vocab_size, (1, batch_size, seq_len + 1)).astype(np.int32))
    times = []
    for i in range(2 + steps):
        t = time.perf_counter()
        loss, gnorm = step(batch)
        mx.eval(loss, gnorm, model.state, opt.state)
        times.append(time.perf_counter() - t)
    return train_flops_per_token(args, seq_len) * batch_size * seq_len / float(np.median(times[2:]))


def calibrated_rate(args, seq_len: int, batch_size: int, out_dir, precision: str = "auto", compile: bool = True,
                    measure=measure_train_rate) -> tuple[float, bool]:
    """-> (training FLOP/s on this machine, whether it came from OUT/costs/machine_rate.json). Measured once per
    machine, model shape, batch shape and precision; every measurement is kept in that file."""
    import json

    from mlx_pn.io import write_json_atomic

    path = Path(out_dir) / "costs" / RATE_FILE
    key = machine_key() | {"model": {k: v for k, v in sorted(asdict(args).items())}, "seq_len": seq_len,
                           "batch_size": batch_size, "precision": precision, "compile": compile}
    key = json.loads(json.dumps(key, default=str))
    try:
        entries = json.loads(path.read_text())["rates"]
    except (OSError, ValueError, KeyError, TypeError):
        entries = []  # absent or unreadable: measured again and rewritten
    for e in entries:
        if e.get("key") == key:
            return float(e["flops_per_s"]), True
    rate = measure(args, seq_len, batch_size, precision, compile)
    entries.append({"key": key, "flops_per_s": rate, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"rates": entries})
    return rate, False


def duration_text(seconds: float) -> str:
    """A planning figure: 'about 40 minutes', 'about 2.5 hours', 'about 3.1 days'."""
    if seconds < 90 * 60:
        n = max(1, round(seconds / 60))
        return f"about {n} minute{'s' if n > 1 else ''}"
    if seconds < 48 * 3600:
        return f"about {seconds / 3600:.1f} hours"
    return f"about {seconds / 86400:.1f} days"
