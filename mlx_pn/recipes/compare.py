"""The paper's experiment in miniature: pretrain every method at matched pretraining FLOPs (two or more
budgets), specialize each on every domain at two or more domain-data sizes, evaluate on the domains' test
splits, and write OUT/results.json, OUT/results.md and two PNG plots (macro perplexity vs pretraining cost;
total cost C_total(N) vs number of domains at equal quality). Interrupted? Run the same command again:
finished cells are read back, not recomputed.

    mlx-pn compare --config compare-tiny     # minutes on a 2-core CPU
    mlx-pn compare --config compare-cpu      # about an hour on a 2-core CPU
    mlx-pn compare --config compare-paper    # the paper's sizes (Mac Studio, GPU)
    mlx-pn compare --config compare-tiny --report-only

Grid options (--grid.*): methods, variants (extra slm rows with model overrides: the STLM options), budgets,
domain_tokens, domains. Everything else is the usual config (data, model, large, pretrain, finetune, ...).
"""

from __future__ import annotations

from pathlib import Path

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import clear_errors


def extra(p):
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild results.json/results.md/plots from the finished cells")


def build_parser():
    from mlx_pn.compare import CompareConfig  # the grid's config class

    return cli_parser(__doc__, cls=CompareConfig, extra=extra)


def main(argv=None):
    from mlx_pn.compare import report_only, run_grid  # the grid

    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(cfg):
        if args.report_only:
            report_only(cfg)
        else:
            run_grid(cfg)
        print((Path(cfg.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
