"""Embed every token window (generic and domains), k-means the generic windows, label every window,
and write each domain's cluster histogram, importance-resampling statistics and a Markdown report.

    mlx-pn cluster --config tiny
    mlx-pn cluster --config offline-mix --cluster.embedder minilm

Outputs under DATA/clusters/ (DATA = data.dir or OUT/data); finished parts are reused on a rerun.
"""

from __future__ import annotations

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import clear_errors


def extra(p):
    p.add_argument("--k", type=int, nargs="+", default=None,
                   help="cluster counts to build (default: cluster.k and cluster.k_importance)")


def build_parser():
    return cli_parser(__doc__, extra=extra)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(cfg):
        from mlx_pn.clustering.stage import clustering_folder, clusters_root, run_clustering, window_len
        from mlx_pn.data.prepare import prepare_data

        data = prepare_data(cfg)
        window, root = window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir)
        results = run_clustering(cfg.cluster, window, root, data, args.k)
        for k, m in results.items():
            hn = m["heldout_domain_nmi_k_domains"]
            print(f"[cluster] k={k} (used {m['key']['k']}): domain NMI at k {m['domain_nmi_at_k']:.3f}; "
                  f"held-out domain separability NMI {hn if hn is None else round(hn, 3)}; "
                  f"report: {clustering_folder(cfg.cluster, window, root, k) / 'report.md'}")


if __name__ == "__main__":
    main()
