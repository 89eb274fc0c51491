"""Training-step time of the projected network (slm-pn) against the plain SLM (its peer), same batch,
same optimizer, measured in one run (median of N steps after warm-up).

    python -m tools.bench_pn_step [--preset cpu] [--batch 16] [--seq 128] [--k 16] [--h 0] [--grouped] [--compile]
"""

from __future__ import annotations

import argparse
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", help="model preset (mlx_pn.models.transformer.PRESETS)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    ap.add_argument("--k", type=int, default=16, help="clusters (experts)")
    ap.add_argument("--h", type=int, default=0, help="basis size (0 = k)")
    ap.add_argument("--grouped", action="store_true", help="one cluster per micro-batch instead of per sequence")
    ap.add_argument("--compile", action="store_true", help="mx.compile the steps (CPU: g++ on first use)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    args = ap.parse_args(argv)

    import mlx_pn  # noqa: F401  (BLAS set-up before mlx.core)
    import mlx.core as mx
    import numpy as np

    from mlx_pn.config import TrainConfig
    from mlx_pn.models.projected import ProjectedArgs, build_projected, projected_cross_entropy
    from mlx_pn.models.transformer import PRESETS, ModelArgs, build_model
    from mlx_pn.train.loop import make_step
    from mlx_pn.train.losses import cross_entropy
    from mlx_pn.train.optim import make_optimizer

    margs = ModelArgs(**PRESETS[args.preset], vocab_size=args.vocab)
    rng = np.random.default_rng(0)
    batch = mx.array(rng.integers(0, args.vocab, (1, args.batch, args.seq + 1)).astype(np.int32))
    ids = mx.array([3], dtype=mx.int32) if args.grouped else \
        mx.array(rng.integers(0, args.k, (1, args.batch)).astype(np.int32))

    def bench(model, loss, extras):
        opt = make_optimizer(TrainConfig(steps=1000))
        opt.init(model.trainable_parameters())
        step = make_step(model, opt, loss, 1, 1.0, args.compile)
        times = []
        for i in range(3 + args.steps):
            t = time.perf_counter()
            loss_value, gnorm = step(batch, *extras)
            mx.eval(loss_value, gnorm, model.state, opt.state)
            if i >= 3:
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    slm = bench(build_model(margs), cross_entropy, ())
    pn = bench(build_projected(margs, ProjectedArgs(k=args.k, h=args.h)), projected_cross_entropy, (ids,))
    routing = "one cluster per micro-batch" if args.grouped else "per sequence"
    print(f"{args.preset}, B={args.batch}, L={args.seq}, V={args.vocab}, k={args.k}, h={args.h or args.k}, "
          f"routing {routing}, compile={args.compile}")
    print(f"slm step {slm * 1e3:.1f} ms | slm-pn step {pn * 1e3:.1f} ms | slm-pn / slm = {pn / slm:.2f}x")


if __name__ == "__main__":
    main()
