"""Mean NLL and perplexity on a held-out token split, and bits per byte.

(The macro perplexity over domains, the paper's headline, is computed where the per-domain results are
tabulated, in the comparison.)
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from tqdm import tqdm

from mlx_pn.data.batches import eval_windows
from mlx_pn.train.losses import token_nll_sum


def nll(model, tokens: np.ndarray, seq_len: int, batch_size: int = 16, max_windows: int = 0,
        labels: np.ndarray | None = None, desc: str | None = None) -> dict:
    """Mean NLL (nats/token) over consecutive windows of a split -> {nll, ppl, tokens}.

    tokens: a 1-D split (cut into windows i = tokens[i*L : i*L+L+1]) or already-cut (N, L + 1) windows.
    labels: one cluster id per window, for the cluster-routed models (called as model(x, ids)).
    desc: show a progress bar (unit: windows) with this label; None: silent (the loop's frequent validations).
    """
    windows = tokens if tokens.ndim == 2 else eval_windows(tokens, seq_len, max_windows)  # (N, L + 1)
    if tokens.ndim == 2 and max_windows:
        windows = windows[:max_windows]
    total, count = 0.0, 0
    bar = tqdm(total=len(windows), desc=desc, unit="win", leave=False, disable=desc is None)
    for i in range(0, len(windows), batch_size):
        w = mx.array(windows[i:i + batch_size])  # (b, L + 1), b <= batch_size
        extras = () if labels is None else (mx.array(np.asarray(labels[i:i + len(w)], dtype=np.int32)),)
        s = token_nll_sum(model, w[:, :-1], w[:, 1:], *extras)  # () summed over the (b, L) targets
        mx.eval(s)
        total += s.item()
        count += w.shape[0] * (w.shape[1] - 1)
        bar.update(w.shape[0])
    bar.close()
    mean = total / count
    return {"nll": mean, "ppl": math.exp(min(mean, 700.0)), "tokens": count}


def bits_per_byte(nll_per_token: float, tokens: int, n_bytes: int) -> float:
    """Tokenizer-independent: total bits over the UTF-8 bytes they encode."""
    return nll_per_token * tokens / (math.log(2) * n_bytes)
