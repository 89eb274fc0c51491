"""A small sampler for every model of the library: greedy, temperature and top-k over next-token logits.

Works on any model called as ``model(ids (1, L), cache=cache) -> (1, L, V)`` with mlx-lm's KV caches: the
llama Transformer (and its shared-weight variants) and the byte-level model, whose logits are the byte
decoder's log-probabilities of every vocabulary entry's bytes (models/byte_lm.py). As in mlx-lm, the
prompt is run through the cache first and only the last position's logits are computed, which matters
for the byte model (each scored position walks the whole vocabulary's byte trie).

``bytes_mode=True`` (byte model only) samples the next chunk byte by byte from the decoder instead, so
the output may hold byte strings that are not vocabulary entries ("open vocabulary"); such a chunk is fed
back through the byte encoder like any other.
"""

from __future__ import annotations

import math

import mlx.core as mx

from mlx_pn.data.tokenizer import EOS_ID


def sample_logits(logits: mx.array, temperature: float = 0.0, top_k: int = 0, key=None) -> int:
    """(V,) logits -> one id: argmax when temperature <= 0, else softmax(logits / T) over the top k."""
    logits = logits.astype(mx.float32)
    if temperature <= 0:
        return int(mx.argmax(logits).item())
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = mx.sort(logits)[-top_k]
        logits = mx.where(logits < kth, -math.inf, logits)
    return int(mx.random.categorical(logits, key=key).item())


def generate_ids(model, prompt: list[int], max_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0, eos_id: int | None = EOS_ID) -> list[int]:
    """Continue `prompt` (token ids) by up to max_tokens ids (stops after eos_id)."""
    from mlx_lm.models.cache import make_prompt_cache

    if not prompt:
        raise ValueError("generate: the prompt must hold at least one token")
    key = mx.random.key(seed)
    cache = make_prompt_cache(model)
    if len(prompt) > 1:  # prefill: only the cache is evaluated, never the prompt's logits
        model(mx.array([prompt[:-1]]), cache=cache)
        mx.eval([c.state for c in cache])
    last, out = prompt[-1], []
    for _ in range(max_tokens):
        key, sub = mx.random.split(key)
        logits = model(mx.array([[last]]), cache=cache)[0, -1]
        last = sample_logits(logits, temperature, top_k, sub)
        out.append(last)
        if eos_id is not None and last == eos_id:
            break
    return out


def generate_bytes(model, prompt: list[int], max_chunks: int = 32, temperature: float = 0.0, top_k: int = 0,
                   seed: int = 0) -> bytes:
    """Byte model, open vocabulary: each next chunk sampled byte by byte by the decoder (stops at </s>)."""
    from mlx_lm.models.cache import make_prompt_cache

    from mlx_pn.models import byte_lm

    C = model.args.byte_chunk_len
    key = mx.random.key(seed)
    cache = make_prompt_cache(model)
    h = model.model(model.embed(mx.array([prompt])), cache=cache)[0, -1]
    out = b""
    for _ in range(max_chunks):
        key, sub = mx.random.split(key)
        chunk = model.sample_chunk(h, temperature, top_k, sub)
        if byte_lm.SYM_EOS in chunk:
            break
        out += bytes(s for s in chunk if s < 256)
        row = mx.array([chunk + [byte_lm.PAD] * (C - len(chunk))], dtype=mx.int32)  # (1, C)
        h = model.model(model.encoder(row)[None], cache=cache)[0, -1]
    return out


def generate_text(model, prompt: str, tokenizer=None, max_tokens: int = 32, temperature: float = 0.0,
                  top_k: int = 0, seed: int = 0, bytes_mode: bool = False) -> str:
    """Prompt text -> continuation text. A byte-level model decodes its ids from its own byte table, so the
    tokenizer is needed only to encode the prompt (mlx_pn.data.tokenizer.Tokenizer)."""
    if tokenizer is None:
        raise ValueError("generate_text needs the tokenizer to encode the prompt")
    ids = tokenizer.encode(prompt)
    is_byte = hasattr(model, "ids_to_bytes")
    if bytes_mode:
        if not is_byte:
            raise ValueError("bytes_mode=True needs a byte-level model (model.frontend=byte)")
        return generate_bytes(model, ids, max_tokens, temperature, top_k, seed).decode("utf-8", errors="replace")
    new = generate_ids(model, ids, max_tokens, temperature, top_k, seed)
    new = [i for i in new if i != EOS_ID]
    if is_byte:
        return model.ids_to_bytes(new).decode("utf-8", errors="replace")
    return tokenizer.decode(new)


