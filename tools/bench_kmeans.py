"""k-means wall time and inertia: mlx_pn.clustering.kmeans.kmeans next to scikit-learn's KMeans (the peer),
same data, same k, k-means++ init, n_init=1, same max_iter, measured in the same run.

    python -m tools.bench_kmeans [--n 20000] [--dim 384] [--ks 16 256] [--iters 50] [--vectors emb.npy]

Data: (a) synthetic 384-d unit vectors drawn around --centres random directions (sentence
embeddings are unit-norm and clustered; isotropic noise alone has no clusters to find), and
(b) with --vectors, a (N, D) .npy of real embeddings (e.g. DATA/clusters/emb-*/generic.train.npy).

Two stopping rules per case: "tol" uses each library's default-style rule at --tol (mlx_pn: relative
inertia change; scikit-learn: centroid shift relative to the data variance, so iteration counts
differ), "fixed" sets tol=0 in both so they run --iters Lloyd steps unless the labels stop changing:
compare ms/it there. Inertia of both is recomputed here in float64 from the returned centroids
(nearest centroid), so the ratio is apples to apples; ratio < 1 means mlx_pn found tighter clusters.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def synthetic(n: int, dim: int, centres: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, dim))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    sizes = rng.dirichlet(np.full(centres, 2.0))  # unequal cluster sizes, like real corpora
    z = rng.choice(centres, size=n, p=sizes)
    x = mu[z] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def inertia64(x: np.ndarray, c: np.ndarray, rows: int = 8192) -> float:
    """Sum of squared distances to the nearest centroid, float64 numpy (the referee for both)."""
    c = c.astype(np.float64)
    c2 = (c * c).sum(1)
    total = 0.0
    for s in range(0, len(x), rows):
        xb = x[s:s + rows].astype(np.float64)
        d = (xb * xb).sum(1)[:, None] - 2 * xb @ c.T + c2[None]
        total += float(np.maximum(d.min(1), 0).sum())
    return total


def run_mlx(x, k, iters, tol, seed):
    """-> (total s, k-means++ s, centroids, Lloyd iterations)"""
    from mlx_pn.clustering.kmeans import kmeans

    t = time.perf_counter()
    r = kmeans(x, k, iters=iters, tol=tol, seed=seed)
    return time.perf_counter() - t, r.init_seconds, r.centroids, r.n_iter


def run_sklearn(x, k, iters, tol, seed):
    """-> (total s, k-means++ s, centroids, Lloyd iterations). KMeans.fit with init="k-means++" is
    exactly sklearn.cluster.kmeans_plusplus followed by Lloyd from those centres; the two are run
    (and timed) as such here, so init and Lloyd time are both measured."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    t = time.perf_counter()
    centres, _ = kmeans_plusplus(x, k, random_state=seed)
    t_init = time.perf_counter() - t
    r = KMeans(n_clusters=k, init=centres, n_init=1, max_iter=iters, tol=tol, random_state=seed,
               algorithm="lloyd").fit(x)
    return time.perf_counter() - t, t_init, r.cluster_centers_, int(r.n_iter_)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="synthetic vectors")
    ap.add_argument("--dim", type=int, default=384, help="synthetic dimension (all-MiniLM-L6-v2: 384)")
    ap.add_argument("--centres", type=int, default=64, help="true directions the synthetic vectors gather around")
    ap.add_argument("--noise", type=float, default=1.0, help="synthetic noise norm relative to the unit centre")
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 256], help="numbers of clusters")
    ap.add_argument("--iters", type=int, default=50, help="max Lloyd iterations (both libraries)")
    ap.add_argument("--tol", type=float, default=1e-4, help="tolerance for the 'tol' rows (each library's meaning)")
    ap.add_argument("--modes", nargs="+", default=["tol", "fixed"], choices=["tol", "fixed"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and library; means reported")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per seed (the fastest is kept)")
    ap.add_argument("--vectors", help="optional (N, D) .npy of real embeddings to benchmark too")
    ap.add_argument("--threads", type=int, default=0,
                    help="cap BLAS/OpenMP threads of both libraries (threadpoolctl); 0: leave as is. On a shared "
                         "machine, 1 keeps spinning BLAS threads from distorting the comparison")
    ap.add_argument("--max-vectors", type=int, default=0, help="use at most this many rows of --vectors (0: all)")
    args = ap.parse_args(argv)

    import mlx_pn
    import sklearn
    from threadpoolctl import threadpool_limits

    if args.threads:
        threadpool_limits(limits=args.threads)  # every BLAS/OpenMP in the process, MLX's OpenBLAS included

    cases = [("synthetic", synthetic(args.n, args.dim, args.centres, args.noise, seed=1234))]
    if args.vectors:
        v = np.load(args.vectors, mmap_mode="r")
        if args.max_vectors and len(v) > args.max_vectors:
            v = v[np.sort(np.random.default_rng(0).choice(len(v), args.max_vectors, replace=False))]
        cases.append((os.path.basename(args.vectors), np.ascontiguousarray(v, dtype=np.float32)))

    # Warm both up (first MLX graph, sklearn's thread pools) on a small slice, untimed.
    run_mlx(cases[0][1][:2000], 8, 3, 0.0, 0)
    run_sklearn(cases[0][1][:2000], 8, 3, 0.0, 0)

    print(f"k-means, k-means++ init, n_init=1, max_iter={args.iters}; {os.cpu_count()} CPU cores; "
          f"threads {args.threads or 'default'}; mlx_pn BLAS {mlx_pn.BLAS}; scikit-learn {sklearn.__version__}; "
          f"seeds {args.seeds}, best of {args.repeats} timing(s) per seed; times are means over seeds")
    print("total = whole fit; init = k-means++ alone; ms/it = (total - init) / Lloyd iterations; "
          "inertia recomputed in float64 from each library's centroids")
    head = (f"{'data':18s} {'N':>6s} {'k':>4s} {'mode':5s} | {'mlx total':>9s} {'init':>6s} {'it':>4s} {'ms/it':>6s} | "
            f"{'sk total':>8s} {'init':>6s} {'it':>4s} {'ms/it':>6s} | {'total mlx/sk':>12s} {'init':>6s} "
            f"{'ms/it':>6s} {'inertia':>8s}")
    print(head)
    print("-" * len(head))
    for name, x in cases:
        for k in args.ks:
            if k > len(x):
                print(f"{name}: skip k={k} > N={len(x)}")
                continue
            for mode in args.modes:
                tol = args.tol if mode == "tol" else 0.0
                res = {"mlx": [], "sk": []}
                for seed in args.seeds:
                    for lib, fn in (("mlx", run_mlx), ("sk", run_sklearn)):
                        runs = [fn(x, k, args.iters, tol, seed) for _ in range(args.repeats)]
                        total, init, c, it = min(runs, key=lambda r: r[0])
                        res[lib].append((total, init, it, (total - init) / max(it, 1) * 1e3,
                                         inertia64(x, np.asarray(c))))
                m, s = np.array(res["mlx"]).mean(0), np.array(res["sk"]).mean(0)
                print(f"{name[:18]:18s} {len(x):6d} {k:4d} {mode:5s} | "
                      f"{m[0]:9.2f} {m[1]:6.2f} {m[2]:4.0f} {m[3]:6.1f} | "
                      f"{s[0]:8.2f} {s[1]:6.2f} {s[2]:4.0f} {s[3]:6.1f} | "
                      f"{m[0] / s[0]:12.2f} {m[1] / s[1]:6.2f} {m[3] / s[3]:6.2f} {m[4] / s[4]:8.4f}", flush=True)


if __name__ == "__main__":
    main()
