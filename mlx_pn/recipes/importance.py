"""Importance-sampled pretraining (slm-is): for each domain, an SLM trained from scratch on generic windows
resampled to the domain's cluster histogram (cluster.k_importance clusters, from `mlx-pn cluster`),
then fine-tuned by `mlx-pn specialize --method slm-is`. Its cost is all specialization: it is paid
again for every new domain (paper-notes.md §4).

    mlx-pn cluster --config cpu
    mlx-pn importance --config cpu --domain legal
    mlx-pn importance --config cpu --all-domains
    mlx-pn specialize --config cpu --method slm-is --domain legal

Outputs: OUT/pretrain-slm-is/DOMAIN/ (checkpoints, metrics.jsonl, final/, summary.json with the resampling
statistics: effective sample size, unique fraction, histogram distance).
"""

from __future__ import annotations

import dataclasses

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import add_resume, clear_errors


def extra(p):
    add_resume(p)
    p.add_argument("--all-domains", action="store_true", help="pretrain one SLM per domain of data.domains, "
                                                              "one after another (default: only --domain)")


def build_parser():
    return cli_parser(__doc__, extra=extra)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    from mlx_pn.methods.importance import SLM_IS

    cfg = dataclasses.replace(cfg, method=SLM_IS.name)
    with clear_errors(cfg):
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.methods.importance import pretrain as pretrain_importance
        from mlx_pn.methods.layout import pretrain_dir

        data = prepare_data(cfg)
        for d in (data.domain_names() if args.all_domains else [cfg.domain]):
            s = pretrain_importance(cfg, data, resume=args.resume, domain=d)
            nll = s.get("best_valid_nll")
            print(f"[importance] {d}: {s['steps']} steps, domain valid nll {'n/a' if nll is None else f'{nll:.4f}'}"
                  f", model in {pretrain_dir(cfg, d)}")


if __name__ == "__main__":
    main()
