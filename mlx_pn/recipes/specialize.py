"""Specialize a pretrained method to one domain: pick its starting SLM, fine-tune with early stopping,
report perplexity on the domain's and the generic test split before and after.

    mlx-pn specialize --config cpu --domain legal
    mlx-pn specialize --config tiny --method slm-mix --select best-loss
    mlx-pn specialize --config tiny --method slm-pn --select histogram
    mlx-pn specialize --config tiny --method llm --domain legal
    mlx-pn specialize --config tiny --method slm-d --domain legal  # after llm
    mlx-pn specialize --config tiny --method slm-nopt --domain legal

--select (slm-pn, slm-mix, slm-hn): most-frequent | best-loss | all | histogram (pn/hn) | auto.
slm-d distills the llm fine-tuned on the same domain (run `--method llm` first); --distill.* sets the
temperature, the mixing weight alpha, top_k and whether teacher outputs are cached on disk or computed live.
The model's shape is read from the pretrained checkpoint: --model.* flags given to pretrain need not be repeated
(a flag set to another value than the checkpoint's is refused).
Results: OUT/specialize/DOMAIN/results.json (slm) or OUT/specialize-METHOD/DOMAIN/results.json; the
model in final/ next to it is a plain Transformer (`mlx-pn export` exports it).
"""

from __future__ import annotations

from mlx_pn.cli import build_parser as cli_parser, parse
from mlx_pn.recipes._common import add_resume, clear_errors


def build_parser():
    return cli_parser(__doc__, extra=add_resume)


def main(argv=None):
    parser = build_parser()
    cfg, args = parse(parser, argv)
    with clear_errors(cfg):
        from mlx_pn.data.prepare import prepare_data
        from mlx_pn.methods import specialize
        from mlx_pn.methods.layout import specialize_dir

        data = prepare_data(cfg, only=[cfg.domain])
        r = specialize(cfg, data, cfg.domain, resume=args.resume)
        d = cfg.domain
        sel = r.get("selected_cluster")
        picked = "" if sel is None else (" from its cluster histogram" if sel == "histogram"
                                         else f" from cluster {sel} ({r['select']})")
        print(f"[specialize {cfg.method}] {d}{picked}: test ppl {r['before'][d]['ppl']:.2f} -> "
              f"{r['after'][d]['ppl']:.2f} (generic {r['before']['generic']['ppl']:.2f} -> "
              f"{r['after']['generic']['ppl']:.2f}); model in {specialize_dir(cfg, d) / 'final'}")


if __name__ == "__main__":
    main()
