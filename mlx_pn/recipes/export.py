"""Export a model to an mlx-lm folder and verify it by loading it back with mlx-lm.

    mlx-pn export --config cpu --domain legal [--quantize 4]
    mlx-pn export --model runs/x/pretrain/final --tokenizer runs/x/data/tokenizer/hf --to out/

By default it exports OUT/specialize/DOMAIN/final to OUT/export/DOMAIN (or OUT/export/DOMAIN-q4); with
--method M (not slm): OUT/specialize-M/DOMAIN/final to OUT/export-M/DOMAIN. The folder gets a model card,
README.md (method, data, tokens seen, measured perplexities, the commands to reproduce and run it; what
`mlx_lm upload` publishes), and the run's config as mlx-pn-config.yaml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.commands import recipe_command
from mlx_pn.recipes._common import clear_errors


def extra(p):
    g = p.add_argument_group("export options")
    g.add_argument("--model", default=None, help="model folder to export (default OUT/specialize/DOMAIN/final)")
    g.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer folder (default DATA/tokenizer/hf)")
    g.add_argument("--to", default=None, help="destination folder (default OUT/export/DOMAIN[-qBITS])")
    g.add_argument("--quantize", type=int, default=None, choices=[2, 3, 4, 5, 6, 8],
                   help="quantize weights to this many bits with mlx-lm (affine)")
    g.add_argument("--group-size", type=int, default=64, help="quantization group size (32, 64 or 128)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the exported weights")
    g.add_argument("--force", action="store_true", help="overwrite an existing export folder")
    g.add_argument("--base-model", default=None, metavar="USER/NAME",
                   help="the model card's base_model: the Hub repository of the model this one was fine-tuned "
                        "from, if you published it (default: none)")


def build_parser():
    return cli_parser(__doc__, extra=extra)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(None if args.to else cfg):  # --to: export_mlx_lm replaces only an export folder
        from mlx_pn.export import export_mlx_lm, generate_command
        from mlx_pn.model_card import usage_lines
        from mlx_pn.methods.layout import specialize_dir
        from mlx_pn.models.build import load_model

        from mlx_pn import runlock

        src = Path(args.model) if args.model else specialize_dir(cfg, cfg.domain) / "final"
        if not (src / "model.safetensors").exists():
            print(f"error: {src}/model.safetensors does not exist; run `{recipe_command('specialize')}` with this "
                  f"config first (or pass --model FOLDER)", file=sys.stderr)
            raise SystemExit(2)
        check_not_routed_pretraining(src, cfg)
        tok = cfg.data_dir / "tokenizer" / "hf"
        tok = Path(args.tokenizer) if args.tokenizer else run_tokenizer(src, tok) if args.model else tok
        suffix = f"-q{args.quantize}" if args.quantize else ""
        folder = "export" if cfg.method == "slm" else f"export-{cfg.method}"
        dest = Path(args.to) if args.to else Path(cfg.out) / folder / f"{cfg.domain}{suffix}"
        # a specialization still writing its folder (between final/ and results.json) holds its lock: wait for it;
        # a reader's lock, so that exports of one model (e.g. plain and quantized) run at once
        with runlock.reading(src.parent):
            report = export_mlx_lm(load_model(src), tok, dest, quantize=args.quantize, group_size=args.group_size,
                                   dtype=args.dtype, force=args.force, card_from=src, base_model=args.base_model,
                                   log=print)
        print(json.dumps(report, indent=2))
        print(f"model card: {dest / 'README.md'}\ntry it: {generate_command(dest)}")
        remote = "model_file" in json.loads((dest / "config.json").read_text())
        print("\n".join(usage_lines(dest, remote=remote)))


def run_tokenizer(model_dir: Path, default: Path) -> Path:
    """The tokenizer of the run a model folder belongs to (RUN/specialize/DOMAIN/final -> RUN/data/tokenizer/hf:
    the nearest enclosing folder that has one), else `default` (the config's data.dir)."""
    for parent in list(model_dir.resolve().parents)[:5]:
        if (parent / "data" / "tokenizer" / "hf" / "tokenizer.json").is_file():
            return parent / "data" / "tokenizer" / "hf"
    return default


def check_not_routed_pretraining(src: Path, cfg) -> None:
    """A routed method's pretraining folder (config.json with a 'projected' section) holds every expert at once,
    not one SLM: say which folder to export instead of failing on its extra parameters."""
    try:
        mc = json.loads((src / "config.json").read_text())
    except (OSError, ValueError):
        return
    if "projected" in mc:
        method = mc.get("mlx_pn_method") or cfg.method
        raise SystemExit(f"error: {src} is the pretraining folder of {method} (its config.json has a 'projected' "
                         f"section): it holds every cluster's expert, not one small model. Specialize it "
                         f"(mlx-pn specialize --method {method} --domain DOMAIN), then export the specialized model: "
                         f"{Path(cfg.out)}/specialize-{method}/DOMAIN/final")


if __name__ == "__main__":
    main()
