"""Which method to train for your own budgets, read off a comparison grid's measurements (the paper's decision:
pretraining budget, specialization budget, inference cap, in-domain data and the number of domains N).

    mlx-pn plan --n-domains 7 --pretrain-budget 2.4e13 --specialize-budget 5e12
    mlx-pn plan --n-domains 1 --pretrain-budget 2.4e13 --specialize-budget 1.5e13 --max-params 2e6
    mlx-pn plan --n-domains 3 --pretrain-budget 0.5h --specialize-budget 10min
    mlx-pn plan --grid runs/compare-mine/results.json --n-domains 20 --domain-tokens 1e6 ...

For each method of the grid: whether it fits (and why not), C_total(N) = C_pretrain + N x C_specialize (the
paper's Eq. 1; slm-is pays its pretraining once per domain), the macro perplexity after fine-tuning with its 95%
interval as measured at your budgets (interpolated between measured budgets; "outside the measured range" where
your budget lies beyond them), and a recommendation with its reason ("no difference" where intervals overlap).
A grid's fine-tuning settings (a step cap beside early stopping) are the specialization budgets: each method gets
the best setting whose measured cost fits yours, and a selection rule other than its own only where that rule is
better beyond the 95% intervals.
Writes OUT/plan.json and OUT/total_cost_vs_domains.png (C_total against N, with where slm-is stops paying).

The grid's figures hold for the grid's model size and data: a grid of your own (`mlx-pn compare`, its
results.json passed with --grid) answers for your scale.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mlx_pn.config import ConfigError
from mlx_pn.recipes._common import clear_errors

_UNITS = {"": None, "flops": None, "s": 1.0, "min": 60.0, "h": 3600.0}  # seconds per unit; None: FLOPs
_BUDGET = re.compile(r"^\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*(flops|s|min|h)?\s*$", re.I)


def build_parser() -> argparse.ArgumentParser:
    from mlx_pn.compare.grid_file import DEFAULT_GRID

    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-domains", type=int, required=True, metavar="N",
                   help="number of domains you will specialize for (each pays C_specialize once)")
    p.add_argument("--pretrain-budget", required=True, metavar="BUDGET",
                   help="shared pretraining budget: FLOPs (8e11), or time on this machine (2h, 90min, 600s) "
                        "turned into FLOPs at the training rate measured here (--rate)")
    p.add_argument("--specialize-budget", required=True, metavar="BUDGET",
                   help="specialization budget per domain, in the same units (slm-is must fit its whole "
                        "pretraining in it)")
    p.add_argument("--domain-tokens", type=float, default=None, metavar="TOKENS",
                   help="in-domain train tokens per domain (default: the grid's largest measured data size)")
    p.add_argument("--max-params", type=float, default=None, metavar="P",
                   help="inference cap: the most parameters a deployed model may have (default: no cap)")
    p.add_argument("--grid", default=None, metavar="RESULTS.json",
                   help=f"a comparison grid's results.json (default: the packaged {DEFAULT_GRID.name}, packed from "
                        f"{packed_from(DEFAULT_GRID)})")
    p.add_argument("--out", default="runs/plan", metavar="DIR",
                   help="folder for plan.json, total_cost_vs_domains.png and the measured rate (default: runs/plan)")
    p.add_argument("--rate", type=float, default=None, metavar="FLOP/S",
                   help="training FLOP/s that turns hours into FLOPs (default: measured once on this machine for the "
                        "grid's small model, a few seconds, cached under OUT/costs/)")
    return p


def packed_from(path: Path) -> str:
    """The results.json a packaged grid was packed from (tools/pack_grid.py records it)."""
    import json

    try:
        return json.loads(path.read_text()).get("source") or "a grid's results.json"
    except (OSError, ValueError):
        return "a grid's results.json (missing from this install)"


def parse_budget(text: str, flag: str, rate) -> float:
    """'8e11' -> FLOPs; '2h' / '90min' / '600s' -> seconds x rate() FLOP/s. ConfigError naming the flag."""
    m = _BUDGET.match(str(text))
    if not m:
        raise ConfigError(f"{flag} {text!r}: not a budget; give FLOPs (8e11) or time on this machine (2h, 90min, "
                          f"600s)")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if value <= 0:
        raise ConfigError(f"{flag} {text!r}: a budget must be > 0")
    return value if _UNITS[unit] is None else value * _UNITS[unit] * rate()


def grid_rate(grid: dict, out: Path) -> float:
    """Training FLOP/s of the grid's small model at its pretraining batch shape on this machine (mlx_pn.costs)."""
    from mlx_pn.config import ModelConfig, from_dict
    from mlx_pn.costs import calibrated_rate
    from mlx_pn.models.build import model_args

    cfg = grid["config"]
    if "model" not in cfg or "pretrain" not in cfg:
        raise ConfigError(f"{grid['path']}: config.model / config.pretrain: missing, so the rate of its model cannot "
                          f"be measured; give budgets in FLOPs or pass --rate FLOP/S")
    pre = cfg["pretrain"]
    args = model_args(from_dict(ModelConfig, cfg["model"], grid["path"], "model."),
                      int(cfg.get("data", {}).get("vocab_size", 2048)))
    rate, cached = calibrated_rate(args, pre["seq_len"], pre["batch_size"], out, pre.get("precision", "auto"),
                                   pre.get("compile", True))
    print(f"[plan] budgets in time -> FLOPs at the training rate of the grid's model on this machine: "
          f"{rate / 1e9:.2f} GFLOP/s ({'cached' if cached else 'measured now'}: {out / 'costs'})", flush=True)
    return rate


def main(argv=None):
    args = build_parser().parse_args(argv)
    with clear_errors():
        from mlx_pn.compare.grid_file import load_grid
        from mlx_pn.compare.plan import Budgets, plan
        from mlx_pn.compare.plan_plot import plot_plan
        from mlx_pn.compare.plan_report import plan_json, plan_text
        from mlx_pn.io import claim_output, write_json_atomic

        if args.n_domains < 1:
            raise ConfigError(f"--n-domains {args.n_domains}: needs at least 1 domain")
        for flag, v in (("--domain-tokens", args.domain_tokens), ("--max-params", args.max_params),
                        ("--rate", args.rate)):
            if v is not None and not v > 0:
                raise ConfigError(f"{flag} {v:g}: must be > 0 (leave it out for the default)")
        grid = load_grid(args.grid)
        out = Path(args.out)
        rate_cache: list[float] = [args.rate] if args.rate else []

        def rate() -> float:  # measured only when a budget is given in time
            if not rate_cache:
                claim_output(out, "--out")
                rate_cache.append(grid_rate(grid, out))
            return rate_cache[0]

        b = Budgets(n_domains=args.n_domains, pretrain_flops=parse_budget(args.pretrain_budget, "--pretrain-budget",
                                                                          rate),
                    specialize_flops=parse_budget(args.specialize_budget, "--specialize-budget", rate),
                    domain_tokens=args.domain_tokens, max_params=int(args.max_params) if args.max_params else None)
        result = plan(grid, b)
        claim_output(out, "--out")
        png = plot_plan(result, out / "total_cost_vs_domains.png")
        write_json_atomic(out / "plan.json", plan_json(grid, result, png.name))
        print(plan_text(grid, result) + f"\nWritten: {out / 'plan.json'}, {png}")


if __name__ == "__main__":
    main()
