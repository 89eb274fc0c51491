"""fp32 matmul GFLOP/s of MLX on this CPU with the bundled reference BLAS and with OpenBLAS, next to
numpy (the peer) measured in the same run. Each MLX setting runs in its own interpreter, because
the BLAS must be chosen before mlx.core loads. The OpenBLAS rows: mlx_pn's set-up (OPENBLAS_CORETYPE from the
CPU flags, mlx_pn.platform) and the same library preloaded with its own CPU detection (an older OpenBLAS can
mistake a newer CPU for a generic one); the kernel family each ran is printed beside it.

    python -m tools.blas_bench [--sizes 256 1024 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
sizes, repeats, lib = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if lib == "numpy":
    import numpy as np
    def run(n):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32); a @ a
        t = time.perf_counter()
        for _ in range(repeats): a @ a
        return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9
else:
    import mlx_pn, mlx.core as mx
    from mlx_pn.platform import blas_core
    def run(n):
        a = mx.random.normal((n, n)); mx.eval(a @ a)
        t = time.perf_counter()
        for _ in range(repeats): mx.eval(a @ a)
        return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9
    lib = mlx_pn.BLAS + (f" ({blas_core()})" if blas_core() else "")
print(json.dumps({"blas": lib, "gflops": {n: run(n) for n in sizes}}))
"""


def measure(sizes, repeats, lib: str, env: dict) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OPENBLAS_CORETYPE")}
    e.update(env)
    p = subprocess.run([sys.executable, "-c", WORKER, json.dumps(sizes), str(repeats), lib], capture_output=True,
                       text=True, env=e, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def preload() -> dict:
    """LD_PRELOAD of the OpenBLAS mlx_pn would load: that library with its own CPU detection."""
    from mlx_pn.platform import _find_openblas  # noqa: E402 (the parent never imports mlx.core)

    path = _find_openblas()
    return {"LD_PRELOAD": path} if path else {"MLX_PN_BLAS": "reference"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048], help="square matrix sizes n")
    ap.add_argument("--repeats", type=int, default=5, help="timed matmuls per size (after one warm-up)")
    args = ap.parse_args(argv)
    ref_sizes = [n for n in args.sizes if n <= 1024]  # the reference BLAS needs ~0.7 s per 1024^3 matmul
    rows = {
        "mlx + reference BLAS": measure(ref_sizes, max(1, args.repeats // 2), "mlx", {"MLX_PN_BLAS": "reference"}),
        "mlx + mlx_pn BLAS set-up": measure(args.sizes, args.repeats, "mlx", {}),
        "mlx + OpenBLAS, own detection": measure(args.sizes, args.repeats, "mlx", preload()),
        "numpy (peer)": measure(args.sizes, args.repeats, "numpy", {}),
    }
    print(f"fp32 matmul GFLOP/s, n x n @ n x n, {os.cpu_count()} CPU cores")
    print(f"{'setup':30s} {'library':90s} " + " ".join(f"{'n=' + str(n):>9s}" for n in args.sizes))
    for name, r in rows.items():
        cells = " ".join(f"{r['gflops'].get(str(n), float('nan')):9.1f}" for n in args.sizes)
        print(f"{name:30s} {r['blas'][:90]:90s} {cells}")
    ref, opt, own, np_ = (rows[k]["gflops"] for k in rows)
    for n in args.sizes:
        print(f"n={n}: mlx_pn set-up / the same OpenBLAS with its own CPU detection = {opt[str(n)] / own[str(n)]:.2f}x")
    for n in ref_sizes:
        print(f"n={n}: mlx_pn set-up / reference = {opt[str(n)] / ref[str(n)]:.1f}x, "
              f"mlx_pn set-up / numpy = {opt[str(n)] / np_[str(n)]:.2f}x")


if __name__ == "__main__":
    main()
