"""The comparison's tables: results in, Markdown out (pure: no files, no training)."""

from __future__ import annotations

import math

import numpy as np

from mlx_pn.costs import c_total


def _macro(nlls: list[float]) -> float:
    return math.exp(float(np.mean(nlls)))


def equal_quality(rows: list[dict], size: str, reference: str = "slm") -> tuple[float | None, dict[str, dict]]:
    """The target quality (the reference row's best macro perplexity after fine-tuning on `size` tokens, or,
    without that row, the worst of the rows' best) and, per row that reaches it at some budget, the cheapest
    such budget (pretraining + one specialization)."""
    best: dict[str, list[dict]] = {}
    for e in rows:
        if size in e["after"]:
            best.setdefault(e["row"], []).append(e)
    if not best:
        return None, {}
    if reference in best:
        target = min(e["after"][size] for e in best[reference])
    else:
        target = max(min(e["after"][size] for e in es) for es in best.values())
    pick = {}
    for name, es in best.items():
        ok = [e for e in es if e["after"][size] <= target * (1 + 1e-9)]
        if ok:
            pick[name] = min(ok, key=lambda e: e["pretrain_flops"] + e["specialize_flops"][size])
    return target, pick


def _budget(b) -> str:
    return "-" if b is None else f"{b:g}"


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def _size_name(n: int) -> str:
    return "all" if n == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def results_markdown(results: dict, cfg: CompareConfig) -> str:
    ns, domains = results["sizes"], results["domains"]
    lines = [f"# Comparison: {cfg.model.preset} SLM ({cfg.large.preset} LLM), {', '.join(domains)}", "",
             "Macro-averaged test perplexity over the domains (exp of the mean per-token NLL); pretraining FLOPs "
             "matched per budget (mlx_pn.costs); fine-tuning with early stopping on each domain's validation "
             "split. Generic: validation perplexity of the pretrained model (routed by cluster for slm-pn/hn/mix).",
             "", "| method | budget | params | pretrain steps | pretrain FLOPs | pretrain s | generic ppl | no fine-tune | "
             + " | ".join(f"fine-tuned {_size_name(n)} tok" for n in ns)
             + f" | bits/byte ({_size_name(ns[-1])}) | spec. FLOPs/domain |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(ns) + "---|---|"]
    for e in results["rows"]:
        first = str(ns[0])
        lines.append(
            f"| {e['row']} | {_budget(e['budget'])} | {_fmt(e['params'], ',')} | {e['pretrain_steps']} | "
            f"{e['pretrain_flops']:.3g} | {_fmt(e['pretrain_wall_s'], '.0f')} | "
            f"{_fmt(e['generic_valid_ppl'])} | {_fmt(e['before'].get(first))} | "
            + " | ".join(_fmt(e["after"].get(str(n))) for n in ns)
            + f" | {_fmt(e['bpb_after'].get(str(ns[-1])), '.3f')} | {_fmt(e['specialize_flops'].get(first), '.3g')} |")
    for n in ns:
        lines += ["", f"## Per domain, fine-tuned on {_size_name(n)} tokens (test perplexity before -> after)", "",
                  "| method | budget | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
        by = {(c["row"], c["budget"], c["domain"]): c for c in results["cells"] if c["size"] == n}
        for e in results["rows"]:
            cells = [by.get((e["row"], e["budget"], d)) for d in domains]
            lines.append(f"| {e['row']} | {_budget(e['budget'])} | " + " | ".join(
                "-" if c is None else f"{c['before_ppl']:.1f} -> {c['after_ppl']:.1f}" for c in cells) + " |")
    size = str(ns[-1])
    target, pick = equal_quality(results["rows"], size)
    if target is not None:
        lines += ["", f"## Total cost at equal quality (macro ppl <= {target:.2f} after fine-tuning on "
                      f"{_size_name(ns[-1])} tokens: the slm's best)", "",
                  "C_total(N) = C_pretrain + N x C_specialize in FLOPs, at each row's cheapest budget reaching that "
                  "quality; rows that reach it at no budget are left out.", "",
                  "| method | budget | macro ppl | N=1 | N=7 | N=50 |", "|---|---|---|---|---|---|"]
        for name, e in pick.items():
            pre, spec = e["pretrain_flops"], e["specialize_flops"][size]
            lines.append(f"| {name} | {_budget(e['budget'])} | {e['after'][size]:.2f} | "
                         + " | ".join(f"{c_total(pre, spec, n):.3g}" for n in (1, 7, 50)) + " |")
        missing = sorted({e["row"] for e in results["rows"]} - set(pick))
        if missing:
            lines.append(f"\nNot reaching it at these budgets: {', '.join(missing)}.")
    lines += ["", "Plots: macro_ppl_vs_pretrain_cost.png, total_cost_vs_domains.png. Every number, with its config, "
                  "seed, FLOPs and wall seconds: results.json."]
    return "\n".join(lines) + "\n"
