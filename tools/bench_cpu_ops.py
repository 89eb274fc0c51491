"""Where MLX's CPU backend is the wall: the cpu preset's training-step ops, one at a time, MLX vs PyTorch.

Shapes of `tools.bench --presets cpu` (B=4, L=128, d=256, F=1024, V=8192, 4 heads, ~4.3M parameters), fp32, one
thread each (OPENBLAS_NUM_THREADS / torch.set_num_threads), forward and backward where the step has both.
Median of --repeats interleaved runs (MLX, torch, MLX, ...), each timing --inner calls synchronised with mx.eval;
the last column is MLX / torch (> 1: MLX slower). Needs torch (a benchmark-only extra; mlx_pn never imports it).

    python -m tools.bench_cpu_ops [--repeats 7] [--inner 5]
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="run the ops whose name contains this text")
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import mlx_pn  # noqa: F401  (OpenBLAS before mlx.core)
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mlx_pn.models.ops import silu as fast_silu
    from mlx_pn.train.losses import nll_rows

    torch.set_num_threads(args.threads)
    B, L, D, Fi, V, H = 4, 128, 256, 1024, 8192, 4
    N = B * L
    rng = np.random.default_rng(0)

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    x, w, wh = arr(N, D), arr(D, Fi, scale=0.05), arr(V, D, scale=0.05)
    g = arr(N, Fi)
    q = arr(B, H, L, D // H)
    logits, tgt = arr(N, V), rng.integers(0, V, N).astype(np.int32)
    P = 4_300_000
    params = arr(P, scale=0.02)

    mxa = {k: mx.array(v) for k, v in dict(x=x, w=w, wh=wh, g=g, q=q, logits=logits, params=params).items()}
    mtgt = mx.array(tgt)
    tha = {k: torch.from_numpy(v.copy()) for k, v in dict(x=x, w=w, wh=wh, g=g, q=q, logits=logits).items()}
    ttgt = torch.from_numpy(tgt.astype(np.int64))

    # ---- MLX candidates (compiled where the step compiles them)
    def m_vjp(f, *a):
        return mx.vjp(f, list(a), [mx.ones_like(f(*a))])

    u = mx.array(arr(N, Fi))

    def swiglu(act):  # the MLP's activation and gate product, as the compiled step sees them
        return mx.compile(lambda a, b: mx.vjp(lambda t: act(t) * b, [a], [b]))

    swiglu_nn, swiglu_fast = swiglu(nn.silu), swiglu(fast_silu)
    tu = torch.from_numpy(np.array(u))
    silu_nn = mx.compile(lambda a: m_vjp(nn.silu, a))
    silu_fast = mx.compile(lambda a: m_vjp(fast_silu, a))
    sdpa = mx.compile(lambda a: m_vjp(lambda t: mx.fast.scaled_dot_product_attention(t, t, t, scale=0.125,
                                                                                       mask="causal"), a))
    rms_w = mx.ones((D,))
    rms = mx.compile(lambda a: m_vjp(lambda t: mx.fast.rms_norm(t, rms_w, 1e-5), a))
    ce_ours = mx.compile(lambda a: mx.vjp(lambda t: nll_rows(t, mtgt).mean(), [a], [mx.array(1.0)]))
    ce_nn = mx.compile(lambda a: mx.vjp(lambda t: nn.losses.cross_entropy(t, mtgt, reduction="mean"), [a],
                                        [mx.array(1.0)]))
    opt = optim.AdamW(learning_rate=1e-3, betas=[0.9, 0.95], weight_decay=0.1, bias_correction=True)
    mp = {"p": mxa["params"]}
    opt.init(mp)
    grad = {"p": mx.array(arr(P, scale=1e-3))}

    def adamw_mlx():
        mp.update(opt.apply_gradients(grad, mp))
        return mp["p"], opt.state

    tparam = torch.nn.Parameter(torch.from_numpy(params.copy()))
    tparam.grad = torch.from_numpy(arr(P, scale=1e-3))
    topt = torch.optim.AdamW([tparam], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def t_bwd(f, *a):
        a = [t.detach().requires_grad_(True) for t in a]
        out = f(*a)
        out.backward(torch.ones_like(out))
        return a[0].grad

    ops = {
        "matmul N x d @ d x F (fwd)": (lambda: mxa["x"] @ mxa["w"], lambda: tha["x"] @ tha["w"]),
        "LM head N x d @ d x V (fwd)": (lambda: mxa["x"] @ mxa["wh"].T, lambda: tha["x"] @ tha["wh"].T),
        "silu fwd+bwd, nn.silu (N x F)": (lambda: silu_nn(mxa["g"]), lambda: t_bwd(F.silu, tha["g"])),
        "silu fwd+bwd, fast silu (ours)": (lambda: silu_fast(mxa["g"]), lambda: t_bwd(F.silu, tha["g"])),
        "silu(gate) * up fwd+bwd, nn.silu": (lambda: swiglu_nn(mxa["g"], u), lambda: t_bwd(
            lambda t: F.silu(t) * tu, tha["g"])),
        "silu(gate) * up fwd+bwd, fast silu": (lambda: swiglu_fast(mxa["g"], u), lambda: t_bwd(
            lambda t: F.silu(t) * tu, tha["g"])),
        "exp (N x V)": (lambda: mx.exp(mxa["logits"]), lambda: torch.exp(tha["logits"])),
        "causal SDPA fwd+bwd (B,H,L,Dh)": (lambda: sdpa(mxa["q"]), lambda: t_bwd(
            lambda t: F.scaled_dot_product_attention(t, t, t, is_causal=True, scale=0.125), tha["q"])),
        "RMSNorm fwd+bwd (N x d)": (lambda: rms(mxa["x"]), lambda: t_bwd(
            lambda t: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5), tha["x"])),
        "cross-entropy fwd+bwd, ours (N x V)": (lambda: ce_ours(mxa["logits"]), lambda: t_bwd(
            lambda t: F.cross_entropy(t, ttgt), tha["logits"])),
        "cross-entropy fwd+bwd, nn.losses": (lambda: ce_nn(mxa["logits"]), lambda: t_bwd(
            lambda t: F.cross_entropy(t, ttgt), tha["logits"])),
        f"AdamW update, {P / 1e6:.1f}M params": (adamw_mlx, lambda: topt.step()),
    }

    def timed(fn, sync):
        t = time.perf_counter()
        for _ in range(args.inner):
            sync(fn())
        return (time.perf_counter() - t) / args.inner

    msync = lambda out: mx.eval(out)  # noqa: E731
    tsync = lambda out: None  # noqa: E731  (torch CPU ops return finished tensors)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; threads {args.threads}")
    print("| op | MLX ms | PyTorch ms | MLX / PyTorch |")
    print("|---|---|---|---|")
    for name, (m, t) in ops.items():
        if args.only not in name:
            continue
        timed(m, msync), timed(t, tsync)  # warm up (compile)
        ms, ts = [], []
        for _ in range(args.repeats):
            ms.append(timed(m, msync))
            ts.append(timed(t, tsync))
        a, b = float(np.median(ms)) * 1e3, float(np.median(ts)) * 1e3
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x |", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
