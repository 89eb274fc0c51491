"""slm-d: is it faster to cache the teacher's top-k on disk or to run the teacher inside every step?

Measured in one run, same student, teacher, batch and steps: the live step (teacher forward + top-k +
student step), the cached step (student step + top-k lookup from the memory-mapped parts) and the cache
build (one teacher forward per domain window). Disk wins once training sees each window more than
build / (live - cached) times; the table prints that break-even point in epochs.

    python -m tools.bench_distill                       # compare-cpu sizes: student d128, teacher d256, V 2048
    python -m tools.bench_distill --student-d 64 --teacher-d 128 --vocab 512 --windows 512
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student-d", type=int, default=128, help="student hidden size (4 layers, MLP 4d)")
    p.add_argument("--teacher-d", type=int, default=256, help="teacher hidden size (4 layers, MLP 4d)")
    p.add_argument("--vocab", type=int, default=2048, help="vocabulary size")
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    p.add_argument("--top-k", type=int, default=32, help="teacher log-probabilities kept per token")
    p.add_argument("--windows", type=int, default=1024, help="domain windows in the cache (one epoch)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (live, cached, live, ...)")
    args = p.parse_args(argv)

    import mlx_pn  # noqa: F401  (BLAS before mlx.core)
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np

    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.models.build import build_model
    from mlx_pn.models.transformer import ModelArgs
    from mlx_pn.train.distill import TeacherCache, TeacherCacheBatches, cached_distill_loss, live_distill_loss
    from mlx_pn.train.step import make_step

    def model(d, seed):
        return build_model(ModelArgs(hidden_size=d, num_hidden_layers=4, intermediate_size=4 * d,
                                     num_attention_heads=4, vocab_size=args.vocab), seed=seed)

    L = args.seq
    tokens = np.random.default_rng(0).integers(3, args.vocab, args.windows * L + 1).astype(np.int32)
    base = PackedBatches(tokens, L, args.batch, seed=0)
    teacher = model(args.teacher_d, 1)
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherCache(tmp, base.n_windows, L, args.top_k)
        t0 = time.perf_counter()
        cache.build(teacher, tokens, 2.0, {"bench": 1}, args.batch, log=lambda *a: None)
        build_s = time.perf_counter() - t0
        cached = TeacherCacheBatches(base, cache)
        modes = {"live": (live_distill_loss(teacher, args.top_k, 0.5, 2.0), base),
                 "cached": (cached_distill_loss(0.5, 2.0), cached)}
        steps = {}
        for name, (loss, _) in modes.items():
            student, opt = model(args.student_d, 2), optim.AdamW(1e-3)
            steps[name] = (student, opt, make_step(student, opt, loss, 1, 1.0, compile=False))
        times = {name: [] for name in modes}
        for r in range(args.rounds):
            for name, (loss, batches) in modes.items():
                student, opt, step = steps[name]
                for i in range(args.steps + (r == 0)):
                    b = batches.batch(r * args.steps + i, 1)
                    arrays = b if isinstance(b, tuple) else (b,)
                    t = time.perf_counter()
                    out = step(*(mx.array(a) for a in arrays))
                    mx.eval(out, student.state, opt.state)
                    if not (r == 0 and i == 0):
                        times[name].append(time.perf_counter() - t)
    live, cach = statistics.median(times["live"]), statistics.median(times["cached"])
    steps_per_epoch = base.n_windows / args.batch
    print(f"student d={args.student_d}, teacher d={args.teacher_d}, vocab {args.vocab}, batch {args.batch}x{L}, "
          f"top-{args.top_k}, {base.n_windows} windows")
    print(f"| | seconds |\n|---|---|\n| live step (teacher inside) | {live:.3f} |\n| cached step | {cach:.3f} |\n"
          f"| cache build ({base.n_windows} windows) | {build_s:.1f} |\n"
          f"| cache build per step's windows | {build_s / steps_per_epoch:.3f} |")
    if live > cach:
        be = build_s / (live - cach) / steps_per_epoch
        print(f"break-even: {be:.2f} epochs of the domain data (disk faster beyond, live faster below)")
    else:
        print("the cached step is not faster than the live one here: live always wins")


if __name__ == "__main__":
    main()
