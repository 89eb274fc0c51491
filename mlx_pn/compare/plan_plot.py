"""The planner's figure (matplotlib, headless Agg backend, the style of mlx_pn.compare.plots): C_total(N) per
method against the number of domains, the user's own budget as a line, and where slm-is stops paying."""

from __future__ import annotations

from pathlib import Path

from mlx_pn.costs import c_total
from mlx_pn.plots import save_png


def plot_plan(result: dict, path: str | Path, max_n: int | None = None) -> Path:
    """total_cost_vs_domains.png of a plan (mlx_pn.compare.plan.plan): solid lines for the methods that fit,
    dashed for those that do not (at their cheapest measured configuration), the user's budget
    C_pretrain + N x C_specialize in black, and the crossover of slm-is with the reference method marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, ms = result["budgets"], result["methods"]
    cross = [c for c in result["crossovers"]
             if c["shared"] == result["crossover_ref"] and c["n"] is not None and c["n"] >= 1]
    top = max([2 * b["n_domains"], 10] + [2 * c["n"] for c in cross])
    max_n = max_n or int(min(top, 1000))
    n = list(range(1, max_n + 1))
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(ms)}
    rec = result["recommendation"]["method"]
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    for group in same_cost(ms):
        e = ms[group[0]]
        label = "\n".join(k + (" (recommended)" if k == rec else "") + ("" if e["fits"] else ": does not fit")
                           + ("" if ms[k]["ppl"] is None else f", ppl {_ppl(ms[k])}") for k in group)
        ax.plot(n, [c_total(e["c_pretrain"], e["c_specialize"], x) for x in n], color=colors[group[0]], label=label,
                ls="-" if e["fits"] else "--", lw=2.4 if rec in group else 1.4 if e["fits"] else 1.0)
    ax.plot(n, [c_total(b["pretrain_flops"], b["specialize_flops"], x) for x in n], color="black", ls=":",
            label="your budget")
    for c in cross:
        e = ms[c["shared"]]
        y = c_total(e["c_pretrain"], e["c_specialize"], c["n"])
        ax.axvline(c["n"], color=colors[c["per_domain"]], ls=":", lw=1)
        ax.plot([c["n"]], [y], "o", color=colors[c["per_domain"]])
        ax.annotate(f"{c['per_domain']} stops paying\nvs {c['shared']}: N = {c['n']:.1f}", (c["n"], y),
                    textcoords="offset points", xytext=(6, -24), fontsize=8)
    ax.axvline(b["n_domains"], color="grey", lw=0.8)
    ax.set(title=f"Total cost for N domains (your N = {b['n_domains']}; recommended: {rec or 'none'})",
           xlabel="number of domains N", ylabel="C_total(N) = C_pretrain + N x C_specialize, FLOPs")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), labelspacing=0.9)
    fig.tight_layout()
    save_png(fig, Path(path))
    plt.close(fig)
    return Path(path)


def _ppl(e: dict) -> str:
    return f"{e['ppl']:.1f}" + ("" if e["ci"] is None else f" ± {e['ci']:.1f}")


def same_cost(ms: dict[str, dict], tol: float = 0.05) -> list[list[str]]:
    """The methods with a cost, grouped where C_pretrain and C_specialize agree within tol (one line on the plot;
    FLOP matching to whole steps leaves them a fraction of a percent apart); a group shares whether it fits."""
    groups: list[list[str]] = []
    for k, e in ms.items():
        if e["c_pretrain"] is None:
            continue
        for g in groups:
            f = ms[g[0]]
            if f["fits"] == e["fits"] and all(abs(e[c] - f[c]) <= tol * max(f[c], 1.0)
                                              for c in ("c_pretrain", "c_specialize")):
                g.append(k)
                break
        else:
            groups.append([k])
    return groups
