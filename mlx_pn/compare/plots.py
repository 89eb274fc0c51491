"""The comparison's figures (matplotlib, headless Agg backend); reads the results of mlx_pn.compare.results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_pn.compare.results import equal_quality, main_settings, setting_name
from mlx_pn.plots import save_png as _save


def plot_compare(results: dict, out_dir: str | Path, max_n: int = 50) -> list[Path]:
    """The comparison's two figures (recipes.compare):

    macro_ppl_vs_pretrain_cost.png: macro perplexity after fine-tuning vs pretraining FLOPs, one panel per
    domain-data size, one line per method (rows without pretraining, slm-is and slm-nopt, as flat lines), the
    mean over the seeds with its 95% interval as error bars (a band for the flat lines);
    total_cost_vs_domains.png: C_total(N) = C_pretrain + N C_specialize at equal quality, N = 1..max_n.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlx_pn.costs import c_total

    out_dir = Path(out_dir)
    sizes = [str(n) for n in main_settings(results)]  # budgets; selection rules are in the tables
    names = list(dict.fromkeys(e["row"] for e in results["rows"]))
    colors = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(5 * (len(sizes) + 1), 4.2), squeeze=False)
    panels = [("before", sizes[0], "no fine-tuning")] + [
        ("after", s, f"fine-tuned, {setting_name(s)}") for s in sizes]
    for ax, (key, size, title) in zip(axes[0], panels):
        vals = [e[key][size] for e in results["rows"] if size in e[key]]
        cis = [e.get(f"{key}_ci", {}).get(size) or 0.0 for e in results["rows"] if size in e[key]]
        # an undertrained row: off the chart
        top = min(max(v + c for v, c in zip(vals, cis)), 2.5 * float(np.median(vals))) if vals else None
        for name in names:
            es = [e for e in results["rows"] if e["row"] == name and size in e[key]]
            if not es:
                continue
            pts = sorted((e["pretrain_flops"], e[key][size], e.get(f"{key}_ci", {}).get(size) or 0.0) for e in es)
            label = name if min(p for _, p, _ in pts) <= top else f"{name} (off the chart)"
            if pts[0][0] == 0:  # no generic pretraining: a flat line at its best value, its interval as a band
                y, h = min((p, h) for _, p, h in pts)
                ax.axhline(y, ls="--", color=colors[name], label=label)
                if h:
                    ax.axhspan(y - h, y + h, color=colors[name], alpha=0.12, lw=0)
            else:
                x, y, h = zip(*pts)
                ax.errorbar(x, y, yerr=h, fmt="o-", capsize=3, color=colors[name], label=label)
        ax.set(title=title, xlabel="pretraining FLOPs", ylabel="macro perplexity")
        ax.set_xscale("log")
        if top:
            ax.set_ylim(0.95 * min(v - c for v, c in zip(vals, cis)), top * 1.05)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    p1 = out_dir / "macro_ppl_vs_pretrain_cost.png"
    _save(fig, p1)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    target, pick = equal_quality(results["rows"], sizes[-1])
    n = list(range(1, max_n + 1))
    for name, e in pick.items():
        pre, spec = e["pretrain_flops"], e["specialize_flops"][sizes[-1]]
        b = "-" if e["budget"] is None else f"{e['budget']:g}"
        ax.plot(n, [c_total(pre, spec, k) for k in n], color=colors[name], label=f"{name} (budget {b})")
    ax.set(title=f"Total cost at the slm's quality (macro ppl <= {target:.1f})" if target else "Total cost",
           xlabel="number of domains N", ylabel="C_total(N), FLOPs")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p2 = out_dir / "total_cost_vs_domains.png"
    _save(fig, p2)
    plt.close(fig)
    return [p1, p2]
