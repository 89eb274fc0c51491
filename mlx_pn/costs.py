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

from dataclasses import asdict, dataclass


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
