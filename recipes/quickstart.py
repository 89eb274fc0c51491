"""The whole pipeline on the bundled real-text data, offline, in minutes on a laptop CPU:

tokenizer -> pretrain on generic text -> fine-tune on one domain -> perplexity before/after ->
export to mlx-lm -> generate through mlx-lm. Results: OUT/quickstart.json, OUT/quickstart.md and OUT/quickstart.png.

    python -m recipes.quickstart                       # recipes/configs/quickstart.yaml
    python -m recipes.quickstart --domain legal --pretrain.steps 400
"""

from __future__ import annotations

from mlx_pn.cli import build_parser, parse
from recipes._common import CONFIGS, add_resume, clear_errors

DEFAULT_CONFIG = CONFIGS / "quickstart.yaml"


def main(argv=None):
    parser = build_parser(__doc__, extra=add_resume, default_config=DEFAULT_CONFIG)
    cfg, args = parse(parser, argv)
    with clear_errors():
        from mlx_pn import quickstart

        results = quickstart.run(cfg, resume=args.resume)
        print("\n" + quickstart.markdown(cfg, results), end="")
        print(f"\nRun it yourself:\n  {quickstart.generate_command(cfg)}")


if __name__ == "__main__":
    main()
