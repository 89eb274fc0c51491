"""The whole pipeline on the bundled real-text data, offline, in minutes on a laptop CPU:

tokenizer -> pretrain on generic text -> fine-tune on one domain -> perplexity before/after ->
export to mlx-lm -> generate through mlx-lm. Results: OUT/quickstart.json, OUT/quickstart.md and OUT/quickstart.png.

    mlx-pn quickstart                       # the quickstart preset (mlx_pn/recipes/configs/quickstart.yaml)
    mlx-pn quickstart --domain legal --pretrain.steps 400
"""

from __future__ import annotations

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import CONFIGS, add_resume, clear_errors

DEFAULT_CONFIG = CONFIGS / "quickstart.yaml"


def build_parser():
    return cli_parser(__doc__, extra=add_resume, default_config=DEFAULT_CONFIG)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(cfg):
        from mlx_pn import quickstart

        results = quickstart.run(cfg, resume=args.resume)
        print("\n" + quickstart.markdown(cfg, results), end="")
        print(f"\nRun it yourself:\n  {quickstart.generate_command(cfg)}")


if __name__ == "__main__":
    main()
