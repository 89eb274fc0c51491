"""Byte-level front end and head around the llama trunk (Super Tiny Language Models, arXiv 2405.14159).

Each token id stands for its SentencePiece piece's UTF-8 bytes (a chunk; '▁' -> b' ', byte-fallback
pieces -> their byte, <unk>/<s>/</s> -> one special symbol each), read from a frozen (V, C) table kept
with the weights, so a model folder needs no tokenizer:

    ids (B, L) -> byte chunks (B, L, C) -> byte encoder: embedding + positions, bidirectional blocks,
    mean-pool over the REAL bytes only -> one D-vector per chunk -> the causal llama trunk -> h (B, L, D)
    -> byte decoder: the NEXT chunk's symbols, autoregressively within the chunk (teacher-forced, causal
    over at most C positions), ending with an END symbol.

The decoder is autoregressive inside a chunk, not parallel as in STLM: the parallel head makes the
bytes of the next chunk independent given the context, so two likely continuations (" the" / " a")
leak mass to byte mixtures (" tha") and the likelihood pays for it; teacher forcing keeps training as
parallel as the STLM head (same cost), and only sampling walks the <= C positions of a chunk.

Likelihood of a chunk with n real symbols: sum_{j<n} log p(s_j | h, s_<j) + log p(END | h, s_<n); a chunk
of exactly C symbols ends implicitly (the C slots are full), so p is a proper distribution over byte
strings of length <= C. Padding after END is masked out of the loss and never pooled (the STLM bug: its
loss ignored END and trained on pads). ``nll_sum`` returns those nats summed over the target tokens: the
loop and the evaluator use it (train/losses.py), and bits per byte = nats / ln2 / UTF-8 bytes.

``__call__`` returns logits over the *token vocabulary*: logit(v) = log p(bytes of v), i.e. the exact
next-token distribution restricted to the vocabulary (duplicate byte strings, e.g. a byte-fallback
piece and the same character's piece, are kept once). The V strings are scored together through their
prefix trie (one decoder position per distinct prefix: ~1.7 per vocabulary entry instead of C). That is
what mlx-lm's samplers need, so this very file is the exported model file (loaded with
``trust_remote_code``): it imports only mlx, numpy and mlx_lm. mlx-lm's prefill never evaluates the
prompt's logits (only its KV cache), so generation scores the vocabulary once per new token.

Shapes: B batch, L tokens, D trunk width, V vocabulary, C byte_chunk_len, Db byte_dim, S symbols, N chunks.
"""

import math
from dataclasses import asdict, dataclass
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models import llama
from mlx_lm.models.base import BaseModelArgs, create_attention_mask

# Symbols: the 256 byte values, then END (a chunk ends here), PAD (after END; never pooled, never a
# target), the three SentencePiece specials, and START (the decoder's input before the first symbol).
END, PAD, SYM_UNK, SYM_BOS, SYM_EOS, START = 256, 257, 258, 259, 260, 261
N_SYMBOLS = 262
MODEL_TYPE = "mlx_pn_byte"


@dataclass
class ModelArgs(BaseModelArgs):
    model_type: str = MODEL_TYPE
    hidden_size: int = 256
    num_hidden_layers: int = 4
    intermediate_size: int = 1024
    num_attention_heads: int = 4
    num_key_value_heads: Optional[int] = None
    vocab_size: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 1024
    frontend: str = "byte"
    byte_chunk_len: int = 16
    byte_dim: int = 128
    byte_encoder_layers: int = 1
    byte_decoder_layers: int = 1
    byte_heads: int = 4

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads or self.byte_dim % self.byte_heads:
            raise ValueError(f"hidden_size={self.hidden_size} / byte_dim={self.byte_dim} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads} / byte_heads={self.byte_heads}")
        if self.byte_chunk_len < 2:
            raise ValueError(f"byte_chunk_len={self.byte_chunk_len}: need at least 2 (a symbol and END)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)

    def llama_args(self) -> "llama.ModelArgs":
        return llama.ModelArgs(model_type="llama", hidden_size=self.hidden_size,
                               num_hidden_layers=self.num_hidden_layers, intermediate_size=self.intermediate_size,
                               num_attention_heads=self.num_attention_heads,
                               num_key_value_heads=self.num_key_value_heads, rms_norm_eps=self.rms_norm_eps,
                               vocab_size=self.vocab_size, rope_theta=self.rope_theta, rope_traditional=False,
                               max_position_embeddings=self.max_position_embeddings, tie_word_embeddings=False)


def piece_symbols(sp, i: int) -> list:
    """SentencePiece id -> its symbols: UTF-8 bytes with '▁' as a space, or one special symbol."""
    if sp.is_unknown(i):
        return [SYM_UNK]
    if sp.is_control(i):
        return [SYM_BOS] if i == sp.bos_id() else [SYM_EOS] if i == sp.eos_id() else [SYM_UNK]
    piece = sp.id_to_piece(i)
    if sp.is_byte(i):  # "<0x0A>"
        return [int(piece[3:5], 16)]
    return list(piece.replace("\u2581", " ").encode("utf-8"))


def build_byte_table(sp, chunk_len: int):
    """(V, C) int32 symbols padded with PAD (longer pieces truncated) and the (V,) untruncated lengths."""
    V = sp.get_piece_size()
    table = np.full((V, chunk_len), PAD, dtype=np.int32)
    lengths = np.zeros(V, dtype=np.int64)
    for i in range(V):
        s = piece_symbols(sp, i)
        lengths[i] = len(s)
        table[i, :min(len(s), chunk_len)] = s[:chunk_len]
    return table, lengths


def relu2(x: mx.array) -> mx.array:
    return mx.square(nn.relu(x))


class ByteBlock(nn.Module):
    """Pre-norm attention + squared-ReLU MLP (Primer; no transcendental: exp/erf are slow on CPUs and the
    byte blocks see C positions per token) at width Db over the C positions of a chunk (mask: bool, True =
    attend)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.attn_norm = nn.RMSNorm(dim, eps=eps)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = nn.RMSNorm(dim, eps=eps)
        self.up_proj = nn.Linear(dim, 4 * dim, bias=False)
        self.down_proj = nn.Linear(4 * dim, dim, bias=False)

    def __call__(self, x: mx.array, mask) -> mx.array:
        N, C, Db = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).reshape(N, C, self.heads, -1).transpose(0, 2, 1, 3)  # (N, H, C, Db/H)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        x = x + self.o_proj(o.transpose(0, 2, 1, 3).reshape(N, C, Db))
        return x + self.down_proj(relu2(self.up_proj(self.mlp_norm(x))))


class ByteEncoder(nn.Module):
    """chunks (N, C) symbols -> (N, D): bidirectional blocks, mean over real (non-PAD) positions."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        Db = args.byte_dim
        self.embed = nn.Embedding(N_SYMBOLS, Db)
        self.pos = mx.zeros((args.byte_chunk_len, Db))
        self.layers = [ByteBlock(Db, args.byte_heads, args.rms_norm_eps) for _ in range(args.byte_encoder_layers)]
        self.norm = nn.RMSNorm(Db, eps=args.rms_norm_eps)
        self.proj = nn.Linear(Db, args.hidden_size, bias=False)

    def __call__(self, chunks: mx.array) -> mx.array:
        real = chunks != PAD  # (N, C); every chunk has >= 1 real symbol
        x = self.embed(chunks) + self.pos  # (N, C, Db)
        mask = real[:, None, None, :]  # keys: pads are never attended to
        for layer in self.layers:
            x = layer(x, mask)
        r = real[..., None].astype(x.dtype)
        pooled = (self.norm(x) * r).sum(axis=1) / r.sum(axis=1)  # mean over real bytes only
        return self.proj(pooled)


class ByteDecoder(nn.Module):
    """h (N, D) + teacher-forced previous symbols (N, C) -> logits (N, C, S), causal within the chunk."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        Db, C = args.byte_dim, args.byte_chunk_len
        self.cond = nn.Linear(args.hidden_size, Db, bias=False)
        self.embed = nn.Embedding(N_SYMBOLS, Db)
        self.pos = mx.zeros((C, Db))
        self.layers = [ByteBlock(Db, args.byte_heads, args.rms_norm_eps) for _ in range(args.byte_decoder_layers)]
        self.norm = nn.RMSNorm(Db, eps=args.rms_norm_eps)
        self.out = nn.Linear(Db, N_SYMBOLS, bias=False)

    def inputs(self, prev: mx.array) -> mx.array:
        return self.embed(prev) + self.pos  # (..., C, Db)

    def __call__(self, h: mx.array, x: mx.array) -> mx.array:
        """h (N, D), x = inputs(prev): (N or 1, C, Db) -> (N, C, S)."""
        x = self.cond(h)[:, None, :] + x
        C = x.shape[1]
        mask = mx.arange(C)[:, None] >= mx.arange(C)[None, :]  # (C, C) causal
        for layer in self.layers:
            x = layer(x, mask)
        return self.out(self.norm(x))


class Trunk(nn.Module):
    """mlx-lm's llama blocks without the token embedding (names: model.layers.N..., model.norm)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        la = args.llama_args()
        self.layers = [llama.TransformerBlock(la) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, h: mx.array, cache=None) -> mx.array:
        cache = cache if cache is not None else [None] * len(self.layers)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask, cache=c)
        return self.norm(h)


class Model(nn.Module):
    """The byte-level LM: token ids (B, L) -> vocabulary logits (B, L, V); ``nll_sum`` for training."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.encoder = ByteEncoder(args)
        self.model = Trunk(args)
        self.decoder = ByteDecoder(args)
        # Frozen: saved with the weights, never trained (trainable_parameters() leaves it out).
        self.byte_table = mx.full((args.vocab_size, args.byte_chunk_len), PAD, dtype=mx.int32)
        self.freeze(recurse=False, keys=["byte_table"])
        # see trie(); object.__setattr__: a Module would file a dict attribute among its parameters
        object.__setattr__(self, "_trie", None)

    @property
    def layers(self):
        return self.model.layers  # mlx-lm's make_prompt_cache: one KV cache per trunk layer

    # --- byte tables ---------------------------------------------------------------------------------

    def targets(self):
        """(V, C) target symbols (bytes, END at the length when < C) and (V, C) bool: scored positions."""
        tab, C = self.byte_table, self.args.byte_chunk_len
        lens = (tab != PAD).sum(axis=-1, keepdims=True)  # (V, 1)
        pos = mx.arange(C)[None, :]
        tgt = mx.where(pos == lens, END, tab)
        keep = pos <= lens
        return mx.where(keep, tgt, 0), keep

    @staticmethod
    def decoder_prev(tgt: mx.array) -> mx.array:
        """Teacher forcing: START, then the targets shifted right by one."""
        start = mx.full(tgt.shape[:-1] + (1,), START, dtype=tgt.dtype)
        return mx.concatenate([start, tgt[..., :-1]], axis=-1)

    def trie(self) -> dict:
        """The prefix trie of the vocabulary's symbol strings, for scoring all V entries at once.

        A causal decoder's output at position j depends only on the j symbols before it, so the V strings
        share their prefixes: one decoder position per distinct prefix (7,043 for a 4,096-piece vocabulary,
        vs V * C = 65,536 padded positions). Numpy index arrays, rebuilt when the table changes:
        depth[j] = (node ids, input symbol, (N_j, j) ancestor ids); node_idx (V, C): the node scoring
        position j of entry v; canonical (V,): one id per distinct byte string (the highest id: SentencePiece
        emits the merged piece, not its byte-fallback twin), duplicates get logit -inf."""
        if self._trie is not None and self._trie["table"] is self.byte_table:
            return self._trie
        tab, C = np.array(self.byte_table), self.args.byte_chunk_len
        rows = [tuple(int(x) for x in r[r != PAD]) for r in tab]
        prefixes = sorted({r[:j] for r in rows for j in range(min(len(r), C - 1) + 1)}, key=lambda p: (len(p), p))
        nid = {p: i for i, p in enumerate(prefixes)}
        depth = []
        for j in range(C):
            ps = [p for p in prefixes if len(p) == j]
            if not ps:
                break
            depth.append((mx.array([nid[p] for p in ps], dtype=mx.int32),
                          mx.array([START if j == 0 else p[-1] for p in ps], dtype=mx.int32),
                          mx.array(np.array([[nid[p[:i]] for i in range(j)] for p in ps], dtype=np.int32)
                                   .reshape(len(ps), j))))
        node_idx = np.zeros((len(rows), C), dtype=np.int32)
        for v, r in enumerate(rows):
            for j in range(min(len(r), C - 1) + 1):
                node_idx[v, j] = nid[r[:j]]
        seen, keep = set(), np.zeros(len(rows), dtype=bool)
        for v in range(len(rows) - 1, -1, -1):
            if rows[v] not in seen:
                seen.add(rows[v])
                keep[v] = True
        t = {"table": self.byte_table, "depth": depth, "nodes": len(prefixes), "node_idx": mx.array(node_idx),
             "canonical": mx.array(keep)}
        object.__setattr__(self, "_trie", t)
        return t

    def canonical(self) -> mx.array:
        return self.trie()["canonical"]

    # --- forward --------------------------------------------------------------------------------------

    def embed(self, ids: mx.array) -> mx.array:
        """(B, L) ids -> (B, L, D) chunk vectors. A chunk's vector depends on its id only, so when the batch
        has more tokens than the vocabulary, encoding the whole table once and gathering is cheaper."""
        if ids.size >= self.byte_table.shape[0]:
            return self.encoder(self.byte_table)[ids]
        return self.encoder(self.byte_table[ids.reshape(-1)]).reshape(*ids.shape, -1)

    def hidden(self, inputs: mx.array, cache=None) -> mx.array:
        return self.model(self.embed(inputs), cache)  # (B, L, D)

    def nll_sum(self, x: mx.array, y: mx.array, *extras) -> mx.array:
        """Summed nats of the target tokens' symbols, END included, padding excluded."""
        h = self.hidden(x)  # (B, L, D)
        tgt, keep = self.targets()
        t, k = tgt[y].reshape(-1, tgt.shape[-1]), keep[y].reshape(-1, tgt.shape[-1])  # (N, C)
        logits = self.decoder(h.reshape(-1, h.shape[-1]), self.decoder.inputs(self.decoder_prev(t)))
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), t, reduction="none")  # (N, C)
        return (ce * k).sum()

    def trie_logprobs(self, h: mx.array) -> mx.array:
        """h (P, D) -> (P, nodes, S): the decoder's next-symbol log-probabilities at every trie node, depth
        by depth; each node attends to its ancestors (the same function as the teacher-forced decoder)."""
        t, dec = self.trie(), self.decoder
        P = h.shape[0]
        cond = dec.cond(h)[:, None, :]  # (P, 1, Db)
        keys = [[] for _ in dec.layers]
        vals = [[] for _ in dec.layers]
        out = []
        for j, (_, sym, anc) in enumerate(t["depth"]):
            Nj = sym.shape[0]
            x = cond + dec.embed(sym) + dec.pos[j]  # (P, Nj, Db)
            for li, layer in enumerate(dec.layers):
                hh = layer.attn_norm(x)
                q, k, v = (p(hh).reshape(P, Nj, layer.heads, -1) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
                ks, vs = k[:, :, None], v[:, :, None]  # (P, Nj, 1, H, Dh)
                if j > 0:  # the ancestors' keys/values: (P, Nj, j, H, Dh)
                    ks = mx.concatenate([mx.concatenate(keys[li], axis=1)[:, anc], ks], axis=2)
                    vs = mx.concatenate([mx.concatenate(vals[li], axis=1)[:, anc], vs], axis=2)
                keys[li].append(k)
                vals[li].append(v)
                a = mx.softmax((q[:, :, None] * ks).sum(-1) * layer.scale, axis=2)  # (P, Nj, j+1, H)
                o = (a[..., None] * vs).sum(axis=2)  # (P, Nj, H, Dh)
                x = x + layer.o_proj(o.reshape(P, Nj, -1))
                x = x + layer.down_proj(relu2(layer.up_proj(layer.mlp_norm(x))))
            logits = dec.out(dec.norm(x)).astype(mx.float32)
            out.append(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        return mx.concatenate(out, axis=1)

    def chunk_logprobs(self, h: mx.array) -> mx.array:
        """h (P, D) -> (P, V): log p(bytes of v, END | h) for every vocabulary entry (duplicates -inf)."""
        t = self.trie()
        tgt, keep = self.targets()
        lp = self.trie_logprobs(h)  # (P, nodes, S)
        flat = (t["node_idx"] * N_SYMBOLS + tgt).reshape(-1)  # (V*C,)
        picked = lp.reshape(h.shape[0], -1)[:, flat].reshape(h.shape[0], *tgt.shape)  # (P, V, C)
        score = (picked * keep).sum(axis=-1)
        return mx.where(t["canonical"], score, -math.inf)

    def __call__(self, inputs: mx.array, cache=None, input_embeddings=None) -> mx.array:
        """(B, L) ids -> (B, L, V) vocabulary log-probabilities (usable as logits)."""
        h = self.hidden(inputs, cache)
        B, L, D = h.shape
        return self.chunk_logprobs(h.reshape(-1, D)).reshape(B, L, -1)

    def sample_chunk(self, h: mx.array, temperature: float = 0.0, top_k: int = 0, key=None) -> list:
        """Open-vocabulary sampling: h (D,) -> the next chunk's symbols, one at a time until END."""
        C = self.args.byte_chunk_len
        prev = [START]
        out = []
        for j in range(C):
            p = mx.array(prev + [PAD] * (C - len(prev)), dtype=mx.int32)[None]
            logits = self.decoder(h[None], self.decoder.inputs(p))[0, j].astype(mx.float32)
            mask = np.zeros(N_SYMBOLS, dtype=bool)
            mask[[PAD, START]] = True
            if j == 0:
                mask[END] = True  # a chunk holds at least one symbol
            logits = mx.where(mx.array(mask), -math.inf, logits)
            s = _sample(logits, temperature, top_k, None if key is None else mx.random.split(key, C)[j])
            if s == END:
                break
            out.append(s)
            prev.append(s)
        return out

    # --- bookkeeping ----------------------------------------------------------------------------------

    def ids_to_bytes(self, ids) -> bytes:
        """Token ids -> their bytes (specials dropped): text without the tokenizer."""
        tab = np.array(self.byte_table)
        return b"".join(bytes(int(s) for s in tab[int(i)] if s < 256) for i in ids)

    def num_params(self, embeddings: bool = True) -> int:
        """Trainable parameter count (the byte table is a constant); embeddings=False leaves out the byte
        encoder and decoder (the counterpart of a token model's embedding and head)."""
        from mlx.utils import tree_flatten

        n = sum(p.size for _, p in tree_flatten(self.parameters()))
        n -= self.byte_table.size
        if not embeddings:
            n -= sum(p.size for m in (self.encoder, self.decoder) for _, p in tree_flatten(m.parameters()))
        return n


def _sample(logits: mx.array, temperature: float, top_k: int, key) -> int:
    """Greedy (temperature 0) or temperature / top-k sampling from (S,) logits."""
    if temperature <= 0:
        return int(mx.argmax(logits).item())
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = mx.sort(logits)[-top_k]
        logits = mx.where(logits < kth, -math.inf, logits)
    return int(mx.random.categorical(logits, key=key).item())
