"""The llama-compatible decoder-only LM used as SLM and LLM.

Attribute nesting mirrors mlx-lm's ``models/llama.py`` (``model.layers.N.self_attn.q_proj`` ...),
so ``dict(tree_flatten(model.parameters()))`` *is* an mlx-lm llama checkpoint: export is a save.

Shapes: B batch, L sequence length, D hidden size, H query heads, Hkv key/value heads,
Dh head dim, F MLP inner size, V vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.base import BaseModelArgs, create_attention_mask

from mlx_pn.models.ops import swiglu_silu


def check_heads(hidden: int, heads: int, kv: int | None = None, name: str = "model", error=ValueError,
                where: str = "") -> None:
    """The attention heads' rule, written once: the heads divide the width (each head gets hidden / heads
    dimensions) and the key/value heads divide the heads (equal GQA groups). `error` names `{name}.KEY`, the values
    (`where`: e.g. which preset) and the fix; raised by the args below and by the config check (models/build.py)."""
    kv = kv or heads
    if hidden % heads:
        raise error(f"{name}.hidden_size={hidden} must be divisible by {name}.num_attention_heads={heads}{where}; "
                    f"pick heads that divide it")
    if heads % kv:
        raise error(f"{name}.num_attention_heads={heads} must be a multiple of {name}.num_key_value_heads={kv}"
                    f"{where} (GQA groups must be equal)")


class Args(BaseModelArgs):
    """mlx-lm's argument base (from_dict ignores keys that are not fields: eos ids, quantization, ...; so a
    config.json with extras loads) plus to_dict, the config.json it came from."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelArgs(Args):
    """Architecture, with mlx-lm llama ``config.json`` field names (``asdict`` -> config.json)."""

    model_type: str = "llama"
    hidden_size: int = 256
    num_hidden_layers: int = 4
    intermediate_size: int = 1024
    num_attention_heads: int = 4
    num_key_value_heads: Optional[int] = None  # None: = num_attention_heads (no GQA)
    vocab_size: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 1024
    # Super Tiny LM sharing (arXiv 2405.14159): one module stored once, used by every layer. The saved
    # folder keeps it once (model.shared_mlp.*, model.shared_o_proj.*); export writes it into each layer.
    share_ffn: bool = False
    share_attn_out: bool = False

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        check_heads(self.hidden_size, self.num_attention_heads, self.num_key_value_heads)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, own_o_proj: bool = True):
        super().__init__()
        D, H, Hkv, Dh = args.hidden_size, args.num_attention_heads, args.num_key_value_heads, args.head_dim
        self.n_heads, self.n_kv_heads, self.scale = H, Hkv, Dh**-0.5
        self.q_proj = nn.Linear(D, H * Dh, bias=False)
        self.k_proj = nn.Linear(D, Hkv * Dh, bias=False)
        self.v_proj = nn.Linear(D, Hkv * Dh, bias=False)
        if own_o_proj:  # else the caller passes the shared one (share_attn_out)
            self.o_proj = nn.Linear(H * Dh, D, bias=False)
        # traditional=False: the rotate-half (Hugging Face) layout that mlx-lm's llama uses.
        self.rope = nn.RoPE(Dh, traditional=False, base=args.rope_theta)

    def __call__(self, x: mx.array, mask=None, cache=None, o_proj=None) -> mx.array:
        B, L, D = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)  # (B, H, L, Dh)
        k = k.reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)  # (B, Hkv, L, Dh)
        v = v.reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if cache is not None:
            q, k = self.rope(q, offset=cache.offset), self.rope(k, offset=cache.offset)
            k, v = cache.update_and_fetch(k, v)
        else:
            q, k = self.rope(q), self.rope(k)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        o_proj = self.o_proj if o_proj is None else o_proj
        return o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))  # (B, L, D)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), D -> F -> D."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        D, F = args.hidden_size, args.intermediate_size
        self.gate_proj = nn.Linear(D, F, bias=False)
        self.up_proj = nn.Linear(D, F, bias=False)
        self.down_proj = nn.Linear(F, D, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        # swiglu_silu: nn.silu's value (within 2e-6), ~3x faster on a CPU (models/ops.py)
        return self.down_proj(swiglu_silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm block. With share_ffn / share_attn_out the block owns no MLP / o_proj: LlamaModel passes
    its single shared one to every layer, so the weights exist (and are trained) once and their gradient
    is the sum over layers. (Putting one Module object in several layers would not do: tree_flatten would
    list it under every layer and the optimizer would update each copy separately.)

    `mlp_arg`, when given, is passed to the MLP after its input: the projected network's coefficients
    (mlx_pn.models.projected), so its MLPs run inside this same block."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args, own_o_proj=not args.share_attn_out)
        if not args.share_ffn:
            self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None, mlp=None, o_proj=None, mlp_arg=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache, o_proj)
        mlp = self.mlp if mlp is None else mlp
        h2 = self.post_attention_layernorm(h)
        return h + (mlp(h2) if mlp_arg is None else mlp(h2, mlp_arg))


class LlamaModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        if args.share_ffn:
            self.shared_mlp = MLP(args)
        if args.share_attn_out:
            D = args.hidden_size
            self.shared_o_proj = nn.Linear(args.num_attention_heads * args.head_dim, D, bias=False)

    def __call__(self, inputs: mx.array, cache=None, mlp_args=None) -> mx.array:
        """tokens (B, L) -> final-norm hidden states (B, L, D). mlp_args: indexed by layer, the extra argument
        of each layer's MLP (the projected network's alphas (Nl, [B,] h)); None for a plain MLP."""
        h = self.embed_tokens(inputs)  # (B, L, D)
        cache = cache if cache is not None else [None] * len(self.layers)
        # mlx-lm's: None for one new position, else "causal" (aligned to the end when a cache holds keys)
        mask = create_attention_mask(h, cache[0])
        shared = {k: self[v] for k, v in (("mlp", "shared_mlp"), ("o_proj", "shared_o_proj")) if v in self}
        for n, (layer, c) in enumerate(zip(self.layers, cache)):
            h = layer(h, mask, c, mlp_arg=None if mlp_args is None else mlp_args[n], **shared)
        return self.norm(h)


class Transformer(nn.Module):
    """The SLM/LLM: tokens (B, L) int -> logits (B, L, V)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model = LlamaModel(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        self.init_weights()

    def init_weights(self, std: float = 0.02) -> None:
        init_trunk_weights(self, self.args.num_hidden_layers, std)

    def hidden(self, inputs: mx.array, cache=None) -> mx.array:
        """Final-norm hidden states (B, L, D): what the LM head reads."""
        return self.model(inputs, cache)

    def head(self, h: mx.array) -> mx.array:
        """(..., D) -> (..., V)."""
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        return self.head(self.hidden(inputs, cache))

    @property
    def layers(self):
        # mlx-lm's cache helpers (make_prompt_cache) look for `model.layers`.
        return self.model.layers

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.size for _, p in tree_flatten(self.parameters()))
        if not embeddings:
            n -= self.model.embed_tokens.weight.size
            if not self.args.tie_word_embeddings:
                n -= self.lm_head.weight.size
        return n


def init_trunk_weights(module: nn.Module, num_layers: int, std: float = 0.02) -> None:
    """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).

    MLX's default Linear init (uniform +-1/sqrt(in)) gives logits far too large with a tied
    embedding of unit variance; this keeps the initial loss near log(V). Shared by every model built on
    this trunk (the projected network's basis tensors get the same scale by their names).
    """
    resid_std = std / (2 * num_layers) ** 0.5
    new = {}
    for name, p in tree_flatten(module.parameters()):
        if name.endswith("norm.weight") or name.endswith("layernorm.weight") or not mx.issubdtype(p.dtype, mx.floating):
            continue  # gains stay 1; integer tables (the byte model's) are constants
        s = resid_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
        new[name] = mx.random.normal(p.shape, dtype=p.dtype) * s
    module.load_weights(list(new.items()), strict=False)


def unshare_weights(weights: dict, num_layers: int) -> dict:
    """Flat weights of a model with shared FFN / o_proj -> the plain llama names, the shared tensors written
    into every layer (model.shared_mlp.X -> model.layers.N.mlp.X, model.shared_o_proj.weight ->
    model.layers.N.self_attn.o_proj.weight). Other weights pass through."""
    out = {}
    for name, p in weights.items():
        if name.startswith("model.shared_mlp."):
            for n in range(num_layers):
                out[f"model.layers.{n}.mlp." + name[len("model.shared_mlp."):]] = p
        elif name.startswith("model.shared_o_proj."):
            for n in range(num_layers):
                out[f"model.layers.{n}.self_attn.o_proj." + name[len("model.shared_o_proj."):]] = p
        else:
            out[name] = p
    return out


def unshared(model: "Transformer") -> "Transformer":
    """The same function as a plain llama Transformer (no shared modules): what export writes."""
    args = replace(model.args, share_ffn=False, share_attn_out=False)
    plain = Transformer(args)
    plain.load_weights(list(unshare_weights(dict(tree_flatten(model.parameters())), args.num_hidden_layers).items()),
                       strict=True)
    return plain
