"""Pretrain a small model on the generic corpus (builds the tokenizer and shards first if needed).

    python -m recipes.pretrain --config recipes/configs/cpu.yaml [--pretrain.steps 1000]
"""

from __future__ import annotations

from mlx_pn.cli import build_parser, parse
from recipes._common import add_resume, clear_errors


def main(argv=None):
    parser = build_parser(__doc__, extra=add_resume)
    cfg, args = parse(parser, argv)
    with clear_errors():
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.stages import pretrain

        data = prepare_data(cfg)
        summary = pretrain(cfg, data, resume=args.resume)
        print(f"[pretrain] done: {summary['steps']} steps, best valid nll {summary['best_valid_nll']:.4f}, "
              f"model in {cfg.out}/pretrain/final")


if __name__ == "__main__":
    main()
