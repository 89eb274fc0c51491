"""The planner's answer as text (what `mlx-pn plan` prints) and as plan.json (pure text building; no files)."""

from __future__ import annotations


def _g(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def _ppl(e: dict) -> str:
    if e["ppl"] is None:
        return "-"
    if e["ci"] is None:
        return f"{e['ppl']:.2f} (n=1)"
    return f"{e['ppl']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"


def budgets_text(b: dict, grid: dict, tokens_default: float) -> list[str]:
    tok = b["domain_tokens"] or tokens_default
    cap = "no cap" if not b["max_params"] else f"{b['max_params']:,} parameters"
    seeds = len(grid["seeds"]) or "?"
    many = "s" if b["n_domains"] > 1 else ""
    whose = "" if b["domain_tokens"] else " (the grid's largest data size)"
    return [f"Plan for N={b['n_domains']} domain{many} of {tok:,.0f} train tokens each{whose}: pretraining "
            f"{b['pretrain_flops']:.3g} FLOPs, specialization {b['specialize_flops']:.3g} FLOPs per domain, inference "
            f"cap: {cap}.",
            f"Grid: {grid['shown']} ({len(grid['domains'])} domains, {seeds} seeds; macro perplexity after "
            "fine-tuning, mean and 95% interval over the seeds)."]


def plan_text(grid: dict, result: dict) -> str:
    """The table (one line per method), each method's basis (measured / interpolated / outside the measured
    range) or why it does not fit, the recommendation and where slm-is stops paying."""
    b, ms = result["budgets"], result["methods"]
    big = max(grid["tokens_per_size"].values())
    n = b["n_domains"]
    head = ["method", "fits", "params", "C_pretrain", "C_spec/domain", f"C_total(N={n})", "macro ppl [95%]", "verdict"]
    body = [[k, "yes" if e["fits"] else "no", _g(e["params"], ",") if e["params"] else "-", _g(e["c_pretrain"]),
             _g(e["c_specialize"]), _g(e["c_total"]), _ppl(e), e["verdict"]]
            for k, e in sorted(ms.items(), key=lambda kv: (not kv[1]["fits"], kv[1]["ppl"] or float("inf")))]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head) - 1)]
    lines = budgets_text(b, grid, big) + [""]
    for r in [head] + body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    lines += ["", "Where each figure comes from (FLOPs as mlx_pn.costs counts them):"]
    for k, e in ms.items():
        parts = ([] if e.get("spec_setting") is None else [f"{result['axis']} = {e['spec_setting']}"]) + (
            [f"selection rule {e['select']}"] if e.get("select") else [])
        setting = f" [{', '.join(parts)}]" if parts else ""
        lines.append(f"  {k}{setting}: " + ("; ".join(e["notes"]) if e["fits"] or e["notes"] else e["why"]))
    capped = [f"{k} {e['cap_hit'][0]}/{e['cap_hit'][1]}" for k, e in ms.items() if (e.get("cap_hit") or [0])[0]]
    if capped:
        lines.append("  Fine-tuning stopped at its step cap with validation still falling (the cap, not the method, "
                     "may have set these figures; cells): " + ", ".join(capped))
    rec = result["recommendation"]
    lines += ["", f"Recommendation: {rec['method'] or 'none'}: {rec['reason']}."]
    for c in result["crossovers"]:
        if c["shared"] != result["crossover_ref"]:
            continue
        d, sh = c["per_domain"], c["shared"]
        one = (ms[d]["c_total"] / b["n_domains"], ms[sh]["c_pretrain"] + ms[sh]["c_specialize"])
        lines.append(f"{d} vs {sh}: " + (
            f"{d} costs less per domain: it stays cheaper at every N" if c["n"] is None else
            f"{d} costs more in total already for one domain ({one[0]:.3g} vs {one[1]:.3g} FLOPs): it pays in "
            f"perplexity, never in cost" if c["n"] < 1 else
            f"{d} is cheaper in total below N = {c['n']:.1f} domains and stops paying beyond it")
            + ("" if ms[d]["fits"] else f" ({d} at its cheapest measured cost; it does not fit your budgets)"))
    return "\n".join(lines) + "\n"


def plan_json(grid: dict, result: dict, plot: str | None) -> dict:
    """Everything the text says, as numbers: the budgets, the grid it came from, per method its estimate."""
    return {"grid": grid["path"], "grid_domains": grid["domains"], "grid_seeds": grid["seeds"],
            "tokens_per_size": grid["tokens_per_size"], **result, "plot": plot}
