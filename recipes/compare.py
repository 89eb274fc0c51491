"""The paper's experiment in miniature: pretrain every method at matched pretraining FLOPs (two or more
budgets), specialize each on every domain at two or more domain-data sizes, evaluate on the domains' test
splits, and write OUT/results.json, OUT/results.md and two PNG plots (macro perplexity vs pretraining cost;
total cost C_total(N) vs number of domains at equal quality). Interrupted? Run the same command again:
finished cells are read back, not recomputed.

    python -m recipes.compare --config recipes/configs/compare-tiny.yaml     # minutes on a 2-core CPU
    python -m recipes.compare --config recipes/configs/compare-cpu.yaml      # about an hour on a 2-core CPU
    python -m recipes.compare --config recipes/configs/compare-paper.yaml    # the paper's sizes (Mac Studio, GPU)
    python -m recipes.compare --config recipes/configs/compare-tiny.yaml --report-only

Grid options (--grid.*): methods, variants (extra slm rows with model overrides: the STLM options), budgets,
domain_tokens, domains. Everything else is the usual config (data, model, large, pretrain, finetune, ...).
"""

from __future__ import annotations

from pathlib import Path

from mlx_pn.cli import build_parser, parse
from recipes._common import clear_errors


def extra(p):
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild results.json/results.md/plots from the finished cells")


def main(argv=None):
    from mlx_pn.compare import CompareConfig, report_only, run_grid  # the grid

    parser = build_parser(__doc__, cls=CompareConfig, extra=extra)
    cfg, args = parse(parser, argv)
    with clear_errors():
        if args.report_only:
            report_only(cfg)
        else:
            run_grid(cfg)
        print((Path(cfg.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
