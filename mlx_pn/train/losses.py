"""Loss functions with the signature the loop expects: ``loss_fn(model, x, y, *extras) -> scalar``.

x, y: (B, L) int32 inputs and next-token targets; ``extras`` (e.g. the (B,) cluster ids of the
cluster-routed models) are passed on to the model: ``model(x, *extras)``.

Why a hand-written cross-entropy: on a CPU, MLX runs element-wise work on one thread and its ``exp`` is a
scalar polynomial with library ``fma``/``floor`` calls (~13 ns/element on the project's x86 VM, vs ~0.4 ns
for an add). ``nn.losses.cross_entropy`` over (B*L, V) logits takes two ``exp`` passes (``logsumexp`` in
the forward, ``softmax`` again in the backward) plus a one-hot pass: ~75 ms for 512 x 8192 logits, more
than the LM head's three matmuls. :func:`nll_rows` computes the same value with an ``exp`` built from
multiply/add/shift (fused by ``mx.compile`` into a few cheap passes, relative error ~2e-7) and a custom
backward ``(softmax - onehot) * g`` fused into the same few passes (the one-hot is a comparison inside the
kernel, never an array). Used on the CPU only (see `logits_nll`). tools/RESULTS.md has the measurements.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_pn.models.ops import exp_nonpositive, fast_exp, silu  # noqa: F401  (re-exported: tests, tools)

# the fast exp (and silu) live in models/ops.py: the model's MLP uses them too, and models/ never imports train/
_exp = fast_exp


@mx.custom_function
def nll_rows(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-row negative log-likelihood: logits (N, V) fp32, targets (N,) int -> (N,) = lse(row) - row[target]."""
    m = mx.max(logits, axis=-1, keepdims=True)  # (N, 1)
    lse = mx.log(mx.sum(_exp(logits - m), axis=-1)) + m[:, 0]  # (N,)
    return lse - mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]


@nll_rows.vjp
def _nll_rows_vjp(primals, cotangent, output):
    logits, targets = primals
    g = cotangent[0] if isinstance(cotangent, (list, tuple)) else cotangent  # (N,)
    out = output[0] if isinstance(output, (list, tuple)) else output
    t = targets[:, None]
    lse = out + mx.take_along_axis(logits, t, axis=-1)[:, 0]  # recovered from the output: no saved state
    g = g[:, None]  # (N, 1)
    # (softmax - onehot) * g; the one-hot is a comparison inside the same fused element-wise kernel (no
    # (N, V) one-hot array, no scatter copy; MLX's CPU `where` would be a slow extra pass)
    onehot = mx.arange(logits.shape[-1], dtype=targets.dtype)[None, :] == t
    grad = _exp(logits - lse[:, None]) * g - onehot * g  # (N, V)
    return grad, mx.zeros_like(targets)


def logits_nll(logits: mx.array, y: mx.array, reduction: str = "mean") -> mx.array:
    """(..., V) logits (any float dtype; computed in fp32) and (...) targets -> mean or summed NLL.

    On the CPU through `nll_rows`; on a GPU (fast native exp) through nn.losses.cross_entropy, which keeps
    fewer (N, V) temporaries alive (the fused exp splits at its bit cast: ~3 more fp32 (N, V) buffers)."""
    if mx.default_device() != mx.cpu:
        return nn.losses.cross_entropy(logits.astype(mx.float32), y, reduction=reduction)
    V = logits.shape[-1]
    nll = nll_rows(logits.astype(mx.float32).reshape(-1, V), y.reshape(-1))  # (N,), N = the leading dims' product
    return nll.mean() if reduction == "mean" else nll.sum()


def cross_entropy(model, x: mx.array, y: mx.array, *extras) -> mx.array:
    """Mean next-token negative log-likelihood (nats/token); logits kept in fp32 for the loss.

    A model with its own likelihood (the byte-level model: nats of the next token's bytes) defines
    ``nll_sum(x, y, *extras) -> summed nats over the (B, L) target tokens`` and is used through it."""
    if hasattr(model, "nll_sum"):
        return model.nll_sum(x, y, *extras) / y.size
    return logits_nll(model(x, *extras), y, "mean")


def token_nll_sum(model, x: mx.array, y: mx.array, *extras) -> mx.array:
    """Summed NLL over all tokens of the batch (for exact perplexity over unequal batches)."""
    if hasattr(model, "nll_sum"):
        return model.nll_sum(x, y, *extras)
    return logits_nll(model(x, *extras), y, "sum")


def reference_cross_entropy(model, x: mx.array, y: mx.array, *extras) -> mx.array:
    """The same loss through ``nn.losses.cross_entropy`` (the peer in tests and benchmarks)."""
    if hasattr(model, "nll_sum"):
        return model.nll_sum(x, y, *extras) / y.size
    return nn.losses.cross_entropy(model(x, *extras).astype(mx.float32), y, reduction="mean")
