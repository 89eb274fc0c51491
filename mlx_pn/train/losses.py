"""Loss functions with the signature the loop expects: ``loss_fn(model, x, y) -> scalar``.

x, y: (B, L) int32 inputs and next-token targets; ``extras`` (e.g. the (B,) cluster ids of the
cluster-routed models) are passed on to the model: ``model(x, *extras)``.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def cross_entropy(model, x: mx.array, y: mx.array, *extras) -> mx.array:
    """Mean next-token negative log-likelihood (nats/token); logits kept in fp32 for the loss.

    A model with its own likelihood (the byte-level model: nats of the next token's bytes) defines
    ``nll_sum(x, y, *extras) -> summed nats over the (B, L) target tokens`` and is used through it."""
    if hasattr(model, "nll_sum"):
        return model.nll_sum(x, y, *extras) / y.size
    logits = model(x, *extras).astype(mx.float32)  # (B, L, V)
    return nn.losses.cross_entropy(logits, y, reduction="mean")


def token_nll_sum(model, x: mx.array, y: mx.array, *extras) -> mx.array:
    """Summed NLL over all tokens of the batch (for exact perplexity over unequal batches)."""
    if hasattr(model, "nll_sum"):
        return model.nll_sum(x, y, *extras)
    logits = model(x, *extras).astype(mx.float32)
    return nn.losses.cross_entropy(logits, y, reduction="sum")
