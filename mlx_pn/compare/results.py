"""The comparison's tables: results in, Markdown out (pure: no files, no training)."""

from __future__ import annotations

import math

import numpy as np

from mlx_pn.costs import c_total


def _macro(nlls: list[float]) -> float:
    return math.exp(float(np.mean(nlls)))


# --- seeds: means, Student-t intervals, paired differences ----------------------------------------------

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # two-sided 95% Student t quantiles, 1..30 degrees of freedom


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (a table to 30, then 1.96 + 2.4/df, which
    is within 0.002 of the exact value beyond)."""
    return _T975[df - 1] if df <= 30 else 1.96 + 2.4 / df


def interval(xs: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of its 95% Student-t interval over the replicates); the half-width is None for n = 1."""
    x = np.asarray(xs, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), None
    return float(x.mean()), t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))


def _mean_ci(values: list) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    m, h = interval(vals)
    return m, h, len(vals)


_PER_SIZE = ("before", "after", "bpb_after", "specialize_flops", "specialize_wall_s")
_SCALARS = ("pretrain_flops", "pretrain_wall_s", "generic_valid_ppl", "expert_cosine")


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per (row, budget) from the per-seed entries: every number the mean over the seeds that have
    it, with `KEY_ci` (95% half-width, None for one seed) and `KEY_n` (how many seeds) beside it; per-size
    dicts (before, after, ...) the same per size. Perplexities are averaged as perplexities (per seed: the
    exp of the mean per-token NLL over the domains)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["row"], r["budget"]), []).append(r)
    out = []
    for (row, budget), rs in groups.items():
        e = {k: v for k, v in rs[0].items() if k not in _PER_SIZE + _SCALARS + ("seed",)}
        e["seeds"] = [r["seed"] for r in rs]
        e["params"] = next((r["params"] for r in rs if r.get("params")), None)
        for key in _SCALARS:
            m, h, n = _mean_ci([r.get(key) for r in rs])
            e[key], e[f"{key}_ci"], e[f"{key}_n"] = (m if n else (0.0 if key.startswith("pretrain") else None)), h, n
        for key in _PER_SIZE:
            e[key], e[f"{key}_ci"], e[f"{key}_n"] = {}, {}, {}
            for size in dict.fromkeys(s for r in rs for s in r.get(key, {})):
                m, h, n = _mean_ci([r[key].get(size) for r in rs if size in r.get(key, {})])
                if n:
                    e[key][size], e[f"{key}_ci"][size], e[f"{key}_n"][size] = m, h, n
        out.append(e)
    return out


def verdict(lo: float | None, hi: float | None, reference: str = "slm") -> str:
    if lo is None:
        return "n=1: no interval"
    return f"beats the {reference}" if hi < 0 else f"worse than the {reference}" if lo > 0 else "no difference"


def paired_differences(runs: list[dict], sizes: list, reference: str = "slm", ref_size: dict | None = None) -> list[dict]:
    """Per row (other than the reference) and domain-data size: the per-seed difference of macro NLL after
    fine-tuning (row minus the reference row at the same budget and seed; rows without pretraining against
    the reference at every budget), its mean and 95% interval, and the verdict: "beats the slm" only where the
    interval lies below zero, "worse than the slm" above, "no difference" where it holds zero. ref_size maps a
    setting to the reference's (a selection rule's setting to the plain one: the slm selects nothing)."""
    ref_size = ref_size or {}
    ref = {(r["budget"], r["seed"]): r for r in runs if r["row"] == reference}
    ref_budgets = sorted({b for b, _ in ref if b is not None})
    pairs: dict[tuple, list[tuple[int, float]]] = {}
    for r in runs:
        if r["row"] == reference:
            continue
        for vs in ([r["budget"]] if r["budget"] is not None else ref_budgets):
            base = ref.get((vs, r["seed"]))
            for size in sizes:
                a = r["after"].get(str(size))
                b = None if base is None else base["after"].get(str(ref_size.get(str(size), size)))
                if a is not None and b is not None:
                    pairs.setdefault((r["row"], r["budget"], vs, str(size)), []).append(
                        (r["seed"], math.log(a) - math.log(b)))
    out = []
    for (row, budget, vs, size), ds in pairs.items():
        m, h = interval([d for _, d in ds])
        lo, hi = (None, None) if h is None else (m - h, m + h)
        out.append({"row": row, "budget": budget, "vs_budget": vs, "size": size, "n": len(ds),
                    "seeds": [s for s, _ in ds], "mean_nll_diff": m, "ci": h, "lo": lo, "hi": hi,
                    "ppl_ratio": math.exp(m), "verdict": verdict(lo, hi, reference)})
    return out


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


def setting_name(n) -> str:
    """A specialization setting's name: its data size ("all", "2k"), then its step cap and rule when the grid has
    them ("0:cap200-best-loss" -> "all tok, <= 200 steps, best-loss"; "0:early" -> "all tok, early stopping")."""
    size, _, tag = str(n).partition(":")
    size = int(size)
    name = ("all" if size == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)) + " tok"
    if tag:
        cap, _, rule = tag.partition("-")
        if cap.startswith("cap"):
            name += f", <= {cap[3:]} steps"
        elif cap == "early":
            name += ", early stopping"
        else:
            rule = tag
        name += f", {rule}" if rule else ""
    return name


def _pm(e: dict, key: str, size: str | None = None, spec: str = ".2f") -> str:
    """mean +- 95% half-width over the seeds; one seed: the value and "(n=1)"; no value: "-"."""
    if size is None:
        m, h, n = e.get(key), e.get(f"{key}_ci"), e.get(f"{key}_n", 1)
    else:
        m, h, n = e[key].get(size), e.get(f"{key}_ci", {}).get(size), e.get(f"{key}_n", {}).get(size, 1)
    if m is None:
        return "-"
    return f"{m:{spec}} ± {h:{spec}}" if h is not None else f"{m:{spec}} (n={n})"


def _sweep_markdown(sweep: dict, base_lr: float) -> list[str]:
    if not sweep:
        return ["", f"Learning rate: pretrain.lr = {base_lr:g} for every row (no grid.lr_sweep)."]
    first = next(iter(sweep.values()))
    lines = ["", "## Learning rates (grid.lr_sweep)", "",
             f"Each row with its own generic pretraining was pretrained at pretrain.lr = {base_lr:g} times each "
             f"multiplier (pretrain.min_lr scaled alike), at the smallest budget ({first['budget']:g}) and one seed "
             f"(pretrain.seed = {first['seed']}); the multiplier with the lowest generic validation NLL (slm-mix: the "
             "mean over its experts of their own cluster's validation) is used at every budget and seed. Rows "
             "without a generic pretraining of their own (slm-is, slm-nopt) take the slm's; slm-d's pretraining is "
             "the slm's and the llm's rows.", "",
             "| row | " + " | ".join(f"x{m:g}" for m in first["multipliers"]) + " | winner | lr |",
             "|---|" + "---|" * len(first["multipliers"]) + "---|---|"]
    for name, r in sweep.items():
        best = r["winner"]
        cells = [("-" if v is None else f"**{v:.4f}**" if m == best else f"{v:.4f}")
                 for m, v in zip(r["multipliers"], r["valid_nll"])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if best is None else f'x{best:g}'} | "
                     f"{'-' if best is None else f'{base_lr * best:.3g}'} |")
    if any(r["winner"] in (min(r["multipliers"]), max(r["multipliers"])) for r in sweep.values()
           if r["winner"] is not None and len(r["multipliers"]) > 2):
        lines.append("\nA winner at the edge of the sweep: its best rate may lie outside it.")
    return lines


def _paired_markdown(paired: list[dict], sizes: list, reference: str = "slm") -> list[str]:
    if not paired:
        return []
    lines = ["", f"## Against the {reference}, paired by seed", "",
             f"Per seed: macro NLL after fine-tuning of the row minus the {reference}'s at the same budget (rows "
             f"without pretraining: against the {reference} at each budget) and seed; mean and 95% Student-t "
             "interval over the seeds, in nats (negative: better than the slm; exp(mean) is the ratio of "
             f"perplexities). A row **beats the {reference}** only where the interval excludes zero on the "
             "negative side; where it holds zero: no difference.", "",
             "| row | budget | vs slm budget | data | n | Δ macro NLL (95% CI) | ppl ratio | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    order = [str(x) for x in sizes]
    for d in sorted(paired, key=lambda d: order.index(str(d["size"])) if str(d["size"]) in order else 0):
        ci = f"{d['mean_nll_diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d["ci"] is not None else \
            f"{d['mean_nll_diff']:+.3f} (n=1)"
        v = f"**{d['verdict']}**" if d["verdict"].startswith("beats") else d["verdict"]
        lines.append(f"| {d['row']} | {_budget(d['budget'])} | {_budget(d['vs_budget'])} | "
                     f"{setting_name(d['size'])} | {d['n']} | {ci} | {d['ppl_ratio']:.3f} | {v} |")
    return lines


def main_settings(results: dict) -> list:
    """The settings that are budgets (no selection rule of their own): the ones the slm has too."""
    settings = results.get("settings")
    return [x["label"] for x in settings if not x["select"]] if settings else list(results["sizes"])


def domain_gaps(results: dict, row: str, size, reference: str = "slm") -> dict[str, tuple]:
    """Per domain: the mean over seeds of (row's test NLL - the reference's) after fine-tuning at `size`, same
    budget and seed, with its 95% half-width -> {domain: (mean, half-width | None, n)}."""
    by = {(c["row"], c["budget"], c["domain"], c["seed"]): c["after_nll"] for c in results["cells"]
          if str(c["size"]) == str(size)}
    out = {}
    for d in results["domains"]:
        diffs = [v - by[(reference, b, dd, seed)] for (r, b, dd, seed), v in by.items()
                 if r == row and dd == d and (reference, b, dd, seed) in by]
        if diffs:
            m, h = interval(diffs)
            out[d] = (m, h, len(diffs))
    return out


def entropy_markdown(results: dict, rows=("slm-pn", "slm-hn", "slm-mix")) -> list[str]:
    """The paper's claim (its Table 10): PN and the mixture gain least over the slm on the domains whose cluster
    histogram has the highest entropy. Each domain's entropy beside each row's per-domain gap, and whether the
    highest-entropy domain has the largest gap."""
    ent = results.get("domain_entropy") or {}
    present = {c["row"] for c in results["cells"]}
    rows = [r for r in rows if r in present]
    if len(ent) < 2 or not rows or "slm" not in present:
        return []
    order = sorted(ent, key=lambda d: -ent[d])
    lines = ["", "## Cluster entropy and the gap to the slm (the paper's Table 10 claim)", "",
             "Each domain's cluster-histogram entropy (nats, k = its clustering's) and, per row, the test NLL after "
             "fine-tuning minus the slm's on that domain (same budget and seed; mean ± 95% half-width over seeds and "
             "budgets; negative: better than the slm). The paper: PN and the mixture gain least on the "
             "highest-entropy domains.", "",
             "| setting | row | " + " | ".join(f"{d} (H {ent[d]:.2f})" for d in order) + " | highest-entropy domain "
             "has the largest gap |", "|---|---|" + "---|" * len(order) + "---|"]
    for size in main_settings(results):
        for row in rows:
            g = domain_gaps(results, row, size)
            if len(g) < 2:
                continue
            cells = [("-" if d not in g else f"{g[d][0]:+.3f}" + (f" ± {g[d][1]:.3f}" if g[d][1] is not None else ""))
                     for d in order]
            lines.append(f"| {setting_name(size)} | {row} | " + " | ".join(cells) + f" | {_ordering(g, order[0])} |")
    return lines


def _ordering(g: dict[str, tuple], top: str) -> str:
    """Does the highest-entropy domain `top` have the largest gap? "yes"/"no" only where its interval and the
    other domains' do not overlap; else the domains are not told apart."""
    if top not in g:
        return "-"
    if any(h is None for _, h, _ in g.values()):
        return ("yes" if max(g, key=lambda d: g[d][0]) == top else "no") + " (n=1: no interval)"
    span = {d: (m - h, m + h) for d, (m, h, _) in g.items()}
    others = [d for d in g if d != top]
    if all(span[top][0] > span[d][1] for d in others):
        return "yes"
    worst = max(g, key=lambda d: g[d][0])
    if worst != top and span[worst][0] > span[top][1]:
        return f"no (largest: {worst})"
    return "not told apart (intervals overlap)"


def results_markdown(results: dict, cfg: CompareConfig) -> str:
    ns, domains = results["sizes"], results["domains"]
    last = main_settings(results)[-1]  # the last budget: what the equal-quality table and bits/byte read
    seeds = results.get("seeds", [0])
    lines = [f"# Comparison: {cfg.model.preset} SLM ({cfg.large.preset} LLM), {', '.join(domains)}", "",
             "Macro-averaged test perplexity over the domains (exp of the mean per-token NLL); pretraining FLOPs "
             "matched per budget (mlx_pn.costs); fine-tuning with early stopping on each domain's validation "
             "split. Generic: validation perplexity of the pretrained model (routed by cluster for slm-pn/hn/mix). "
             f"Seeds {', '.join(map(str, seeds))}, each a full replicate (initialisation, pretraining and fine-tuning "
             "data order; the data splits and clusterings are shared): every number is the mean over the seeds ± "
             "the half-width of its 95% Student-t interval ((n=1): one seed, no interval).",
             "", "| method | budget | params | pretrain steps | pretrain FLOPs | pretrain s | generic ppl | no fine-tune | "
             + " | ".join(f"fine-tuned {setting_name(n)}" for n in ns)
             + f" | bits/byte ({setting_name(last)}) | spec. FLOPs/domain |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(ns) + "---|---|"]
    for e in results["rows"]:
        first = str(ns[0])
        lines.append(
            f"| {e['row']} | {_budget(e['budget'])} | {_fmt(e['params'], ',')} | {e['pretrain_steps']} | "
            f"{e['pretrain_flops']:.3g} | {_fmt(e['pretrain_wall_s'], '.0f')} | "
            f"{_pm(e, 'generic_valid_ppl')} | {_pm(e, 'before', first)} | "
            + " | ".join(_pm(e, "after", str(n)) for n in ns)
            + f" | {_pm(e, 'bpb_after', str(last), '.3f')} | {_fmt(e['specialize_flops'].get(first), '.3g')} |")
    lines += _paired_markdown(results.get("paired", []), ns)
    lines += entropy_markdown(results)
    lines += _sweep_markdown(results.get("lr_sweep", {}), cfg.pretrain.lr)
    for n in ns:
        lines += ["", f"## Per domain, fine-tuned on {setting_name(n)} (test perplexity before -> after, "
                      "mean over the seeds)", "",
                  "| method | budget | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
        by: dict[tuple, list[dict]] = {}
        for c in results["cells"]:
            if c["size"] == n:
                by.setdefault((c["row"], c["budget"], c["domain"]), []).append(c)
        for e in results["rows"]:
            cells = [by.get((e["row"], e["budget"], d)) for d in domains]
            lines.append(f"| {e['row']} | {_budget(e['budget'])} | " + " | ".join(
                "-" if not c else f"{np.mean([x['before_ppl'] for x in c]):.1f} -> "
                f"{np.mean([x['after_ppl'] for x in c]):.1f}" for c in cells) + " |")
    size = str(last)
    target, pick = equal_quality(results["rows"], size)
    if target is not None:
        lines += ["", f"## Total cost at equal quality (macro ppl <= {target:.2f} after fine-tuning on "
                      f"{setting_name(last)}: the slm's best)", "",
                  "C_total(N) = C_pretrain + N x C_specialize in FLOPs, at each row's cheapest budget reaching that "
                  "quality (by the means over the seeds: a row within the slm's interval is not told apart from it "
                  "here; the paired table above says which differences are real); rows that reach it at no budget "
                  "are left out.", "",
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
