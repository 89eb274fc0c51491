"""Importance-sampled pretraining (slm-is): for each domain, an SLM trained from scratch on generic windows
resampled to the domain's cluster histogram (cluster.k_importance clusters, from `python -m recipes.cluster`),
then fine-tuned by `python -m recipes.specialize --method slm-is`. Its cost is all specialization: it is paid
again for every new domain (paper-notes.md §4).

    python -m recipes.cluster --config recipes/configs/cpu.yaml
    python -m recipes.importance --config recipes/configs/cpu.yaml --domain legal
    python -m recipes.importance --config recipes/configs/cpu.yaml --all-domains
    python -m recipes.specialize --config recipes/configs/cpu.yaml --method slm-is --domain legal

Outputs: OUT/pretrain-slm-is/DOMAIN/ (checkpoints, metrics.jsonl, final/, summary.json with the resampling
statistics: effective sample size, unique fraction, histogram distance).
"""

from __future__ import annotations

import dataclasses

from mlx_pn.cli import build_parser, parse
from recipes._common import add_resume, clear_errors


def extra(p):
    add_resume(p)
    p.add_argument("--all-domains", action="store_true", help="pretrain one SLM per domain of data.domains, "
                                                              "one after another (default: only --domain)")


def main(argv=None):
    parser = build_parser(__doc__, extra=extra)
    cfg, args = parse(parser, argv)
    cfg = dataclasses.replace(cfg, method="slm-is")
    with clear_errors():
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
