"""Pretrain the generic model of a method on the generic corpus (builds the tokenizer and shards first
if needed). --method slm (default) | llm (the `large` model) | slm-pn | slm-mix | slm-hn (these three need
the clustering of `python -m recipes.cluster` first) | slm-d (pretrains both slm and llm: student and
teacher) | slm-nopt (nothing to do) | slm-is (per domain: the same as `python -m recipes.importance`).

    python -m recipes.pretrain --config recipes/configs/cpu.yaml [--pretrain.steps 1000]
    python -m recipes.pretrain --config recipes/configs/tiny.yaml --method slm-pn [--projected.h 8]
    python -m recipes.pretrain --config recipes/configs/tiny.yaml --method slm-mix [--expert 3]
    python -m recipes.pretrain --config recipes/configs/tiny.yaml --method llm [--large.preset cpu]

Outputs: OUT/pretrain/ (slm) or OUT/pretrain-METHOD/ (slm-mix: one expert-XX/ per expert; --expert i
trains only expert i, so k processes or machines can share the work).
"""

from __future__ import annotations

from mlx_pn.cli import build_parser, parse
from recipes._common import add_resume, clear_errors


def extra(p):
    add_resume(p)
    p.add_argument("--expert", type=int, default=None,
                   help="slm-mix: train only this expert (0..k-1); default: all experts, one after another")


def main(argv=None):
    parser = build_parser(__doc__, extra=extra)
    cfg, args = parse(parser, argv)
    with clear_errors():
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.methods import pretrain
        from mlx_pn.methods.layout import pretrain_dir

        data = prepare_data(cfg)
        summary = pretrain(cfg, data, resume=args.resume, expert=args.expert)
        nll = summary.get("best_valid_nll")
        print(f"[pretrain {cfg.method}] done: {summary['steps']} steps, best valid nll "
              f"{'n/a' if nll is None else f'{nll:.4f}'}, model in {pretrain_dir(cfg)}")


if __name__ == "__main__":
    main()
