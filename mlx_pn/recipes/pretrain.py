"""Pretrain the generic model of a method on the generic corpus (builds the tokenizer and shards first
if needed). --method slm (default) | llm (the `large` model) | slm-pn | slm-mix | slm-hn (these three need
the clustering of `mlx-pn cluster` first) | slm-d (pretrains both slm and llm: student and
teacher) | slm-nopt (nothing to do) | slm-is (per domain: the same as `mlx-pn importance`).

    mlx-pn pretrain --config cpu [--pretrain.steps 1000]
    mlx-pn pretrain --config tiny --method slm-pn [--projected.h 8]
    mlx-pn pretrain --config tiny --method slm-mix [--expert 3]
    mlx-pn pretrain --config tiny --method llm [--large.preset cpu]

Outputs: OUT/pretrain/ (slm) or OUT/pretrain-METHOD/ (slm-mix: one expert-XX/ per expert; --expert i
trains only expert i, so k processes or machines can share the work).
"""

from __future__ import annotations

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import add_resume, clear_errors


def extra(p):
    add_resume(p)
    p.add_argument("--expert", type=int, default=None,
                   help="slm-mix: train only this expert (0..k-1); default: all experts, one after another")


def build_parser():
    return cli_parser(__doc__, extra=extra)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(cfg):
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
