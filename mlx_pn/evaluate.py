"""Perplexity on held-out token splits, per domain and macro-averaged (the paper's headline).

Macro perplexity = exp(mean over domains of the per-token NLL): every domain weighs the same.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from mlx_pn.data.batches import eval_windows
from mlx_pn.train.losses import token_nll_sum


def nll(model, tokens: np.ndarray, seq_len: int, batch_size: int = 16, max_windows: int = 0) -> dict:
    """Mean NLL (nats/token) over consecutive windows of a split -> {nll, ppl, tokens}."""
    windows = eval_windows(tokens, seq_len, max_windows)  # (N, L + 1)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = mx.array(windows[i:i + batch_size])
        s = token_nll_sum(model, w[:, :-1], w[:, 1:])
        mx.eval(s)
        total += s.item()
        count += w.shape[0] * (w.shape[1] - 1)
    mean = total / count
    return {"nll": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}


def macro_perplexity(per_domain_nll: dict[str, float]) -> float:
    return math.exp(sum(per_domain_nll.values()) / len(per_domain_nll))


def bits_per_byte(nll_per_token: float, tokens: int, n_bytes: int) -> float:
    """Tokenizer-independent: total bits over the UTF-8 bytes they encode."""
    return nll_per_token * tokens / (math.log(2) * n_bytes)
