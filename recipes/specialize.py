"""Specialize the pretrained model to one domain: fine-tune with early stopping, report perplexity
on the domain's and the generic test split before and after (written to OUT/specialize/DOMAIN/results.json).

    python -m recipes.specialize --config recipes/configs/cpu.yaml --domain legal
"""

from __future__ import annotations

from mlx_pn.cli import build_parser, parse
from recipes._common import add_resume, clear_errors


def main(argv=None):
    parser = build_parser(__doc__, extra=add_resume)
    cfg, args = parse(parser, argv)
    with clear_errors():
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.stages import specialize

        data = prepare_data(cfg, only=[cfg.domain])
        r = specialize(cfg, data, cfg.domain, resume=args.resume)
        d = cfg.domain
        print(f"[specialize] {d}: test ppl {r['before'][d]['ppl']:.2f} -> {r['after'][d]['ppl']:.2f} "
              f"(generic {r['before']['generic']['ppl']:.2f} -> {r['after']['generic']['ppl']:.2f}); "
              f"model in {cfg.out}/specialize/{d}/final")


if __name__ == "__main__":
    main()
