"""Every method end to end on one config: pretrain each for the same number of steps (slm-is: once per
domain; slm-nopt: not at all), specialize each to every domain, and tabulate test perplexity before/after
fine-tuning. (The experiment grid at matched FLOPs is `recipes.compare`'s job.)

    python -m tools.methods_table --config recipes/configs/offline-mix.yaml --model.preset tiny \\
        --out runs/methods-tiny --data.dir runs/offline-mix/data [--methods slm llm slm-d ...] [--large.preset tiny --large.hidden_size 128]
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def extra(p):
    p.add_argument("--methods", nargs="+", default=["slm", "slm-pn", "slm-mix", "slm-hn", "llm", "slm-d", "slm-nopt",
                                                    "slm-is"], help="methods to run (llm before slm-d: its teacher)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tabulate the results.json files that exist (missing cells: '-')")


def main(argv=None):
    from mlx_pn.cli import build_parser, parse

    cfg, args = parse(build_parser(__doc__, extra=extra), argv)
    import copy

    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.stages import pretrain, pretrain_importance, specialize, specialize_dir

    data = prepare_data(cfg)
    domains = data.domain_names()
    rows, t0 = {}, time.time()
    for method in args.methods:
        c = copy.deepcopy(cfg)
        c.method = method
        if args.report_only:
            found = {d: specialize_dir(c, d) / "results.json" for d in domains}
            rows[method] = {d: json.loads(f.read_text()) for d, f in found.items() if f.exists()}
            continue
        for d in (domains if method == "slm-is" else [None]):
            pretrain_importance(c, data, d) if d else pretrain(c, data)
        rows[method] = {d: specialize(c, data, d) for d in domains}
        print(f"[methods] {method} done at {time.time() - t0:.0f} s", flush=True)
    lines = [f"# Per-domain test perplexity, {cfg.model.preset} preset, {cfg.pretrain.steps} pretraining steps", "",
             "| method | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for method, res in rows.items():
        cells = [f"{res[d]['before'][d]['ppl']:.1f} -> {res[d]['after'][d]['ppl']:.1f}" if d in res else "-"
                 for d in domains]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: perplexity before fine-tuning -> after (early stopping on the domain's valid split)."]
    out = Path(cfg.out)
    (out / "methods.md").write_text("\n".join(lines) + "\n")
    (out / "methods.json").write_text(json.dumps(rows, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
