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

import os

import mlx.core as mx
import mlx.nn as nn

_LOG2E = 1.4426950408889634
_ROUND = 12582912.0  # 1.5 * 2**23: (z + _ROUND) - _ROUND rounds an fp32 |z| < 2**22 to the nearest integer
# Taylor coefficients of 2**f = exp(f ln 2) on f in [-0.5, 0.5]: degree 6 leaves < 1.2e-7 relative error.
_P = (1.0, 0.6931471805599453, 0.24022650695910072, 0.05550410866482158, 0.009618129107628477,
      0.0013333558146428443, 0.00015403530393381606)


def exp_nonpositive(x: mx.array) -> mx.array:
    """exp(x) for fp32 x <= 0 (softmax arguments after subtracting a max or a logsumexp), from cheap
    element-wise ops: exp(x) = 2**n * 2**f, n = round(x log2 e), |f| <= 1/2, 2**n by writing n + 127 into
    the fp32 exponent bits. Below x ~ -87.3, where exp underflows fp32, it returns 0."""
    z = x * _LOG2E
    r = (z + _ROUND) - _ROUND
    f = z - r
    # Estrin's scheme, not Horner's: a shallow graph. mx.compile fuses element-wise chains only up to a
    # limited depth; Horner's 12-deep chain was cut into several kernels with (N, V) temporaries between
    # them (5 buffers and ~3.4x the time, measured).
    f2 = f * f
    p = (_P[0] + _P[1] * f) + f2 * ((_P[2] + _P[3] * f) + f2 * ((_P[4] + _P[5] * f) + f2 * _P[6]))
    k = r.astype(mx.int32) + 127  # the biased exponent; k <= 0 means underflow
    k = mx.bitwise_and(k, mx.bitwise_invert(mx.right_shift(k, 31)))  # max(k, 0) in integer ops (fast on CPU)
    return mx.view(mx.left_shift(k, 23), mx.float32) * p


# Fused into a few passes by mx.compile even when the step itself is not compiled; with compilation switched off
# (MLX_DISABLE_COMPILE=1, as in the tests) the unfused chain is slower than mx.exp, so mx.exp is used.
_exp_fused = mx.compile(exp_nonpositive)  # not shapeless: `view` cannot infer shapes; one trace per shape


def _exp(x: mx.array) -> mx.array:
    return mx.exp(x) if os.environ.get("MLX_DISABLE_COMPILE") else _exp_fused(x)


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


def _sigmoid(x: mx.array) -> mx.array:
    e = _exp(-mx.abs(x))  # in (0, 1]: no overflow on either side
    s = 1.0 / (1.0 + e)
    return s * (x >= 0) + (e * s) * (x < 0)  # bool masks as multipliers: MLX's CPU `where` is slow


@mx.custom_function
def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x), as nn.silu, ~3x faster on a CPU (fast exp, custom backward s + x s (1 - s)).

    Not a loss and not used by the library: the model's SwiGLU MLP calls nn.silu. It is here, beside the fast
    exp it is built from, as a measured proposal: tools/bench.py swaps it in for nn.silu ("fast silu" rows;
    nn.silu's sigmoid costs ~14 ms per layer at B*L=512, F=1024, tools/RESULTS.md). Wiring it into the
    model is a separate change."""
    return x * _sigmoid(x)


@silu.vjp
def _silu_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (list, tuple)) else primals
    g = cotangent[0] if isinstance(cotangent, (list, tuple)) else cotangent
    s = _sigmoid(x)
    return g * (s * (1.0 + x * (1.0 - s)))


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
