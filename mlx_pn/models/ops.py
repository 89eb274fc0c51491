"""Element-wise ops that MLX's CPU backend runs slowly, rebuilt from cheap ones (used by models/ and train/).

Why: on a CPU, MLX runs element-wise work on one thread and its ``exp`` is a scalar polynomial with library
``fma``/``floor`` calls (~13 ns/element on the project's x86 VM, vs ~0.4 ns for an add). :func:`exp_nonpositive`
computes exp from multiply/add/shift, which ``mx.compile`` fuses into one cheap pass (relative error ~2e-7);
:func:`silu` builds the SwiGLU activation on it, with its own backward. Both are fp32-only tricks (they write
fp32 exponent bits) and only pay off on a CPU: :func:`swiglu_silu` picks them there and ``nn.silu`` elsewhere.
tools/RESULTS.md has the measurements.
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


def fast_exp(x: mx.array) -> mx.array:
    """exp(x) for fp32 x <= 0: the fused :func:`exp_nonpositive`, or mx.exp when compilation is off."""
    return mx.exp(x) if os.environ.get("MLX_DISABLE_COMPILE") else _exp_fused(x)


def _sigmoid(x: mx.array) -> mx.array:
    e = fast_exp(-mx.abs(x))  # in (0, 1]: no overflow on either side
    s = 1.0 / (1.0 + e)
    return s * (x >= 0) + (e * s) * (x < 0)  # bool masks as multipliers: MLX's CPU `where` is slow


@mx.custom_function
def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) for fp32 x, as nn.silu (within 2e-6, tests/test_losses.py), ~3x faster on a CPU (fast exp,
    custom backward s (1 + x (1 - s)))."""
    return x * _sigmoid(x)


@silu.vjp
def _silu_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (list, tuple)) else primals
    g = cotangent[0] if isinstance(cotangent, (list, tuple)) else cotangent
    s = _sigmoid(x)
    return g * (s * (1.0 + x * (1.0 - s)))


def swiglu_silu(x: mx.array) -> mx.array:
    """The SwiGLU MLP's activation: :func:`silu` for fp32 on a CPU, nn.silu otherwise (a GPU's native exp is fast;
    bf16/fp16 activations cannot take the fp32 bit trick)."""
    if x.dtype == mx.float32 and mx.default_device() == mx.cpu:
        return silu(x)
    return nn.silu(x)
