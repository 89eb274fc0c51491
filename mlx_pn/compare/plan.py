"""From a grid's measurements to a choice for the user's own budgets (pure: no files, no training).

Per method (a grid row): does it fit the budgets (inference cap, pretraining, per-domain specialization), what it
costs for N domains (the paper's Eq. 1, C_total(N) = C_pretrain + N x C_specialize; slm-is and slm-nopt have no
shared pretraining: what they spend is per domain), and the macro perplexity the grid measured there, with its 95%
interval. Between two measured budgets (or domain-data sizes) the figures are interpolated linearly in log
FLOPs (log tokens); beyond the measured range they are the nearest measurement's, and the estimate says so.
A grid's fine-tuning settings (mlx_pn.compare.grid_settings): per method, the step cap with the lowest perplexity
among those whose measured specialization cost fits; a selection rule other than the row's own replaces it only
where its interval lies wholly below the own rule's (beyond the noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlx_pn.compare.grid_settings import rule_rows
from mlx_pn.costs import c_total

NEAR = 0.10  # a budget up to 10% above a measured one is read as that measurement (it affords it), not interpolated
SAME_COST = 0.05  # totals within 5% are the same cost (the grid matches FLOPs to whole steps, not exactly)


@dataclass
class Budgets:
    """What the user has: N domains with `domain_tokens` train tokens each (None: the grid's largest size), a
    shared pretraining budget and a per-domain specialization budget in FLOPs, a cap on deployed parameters."""

    n_domains: int
    pretrain_flops: float
    specialize_flops: float
    domain_tokens: float | None = None
    max_params: int | None = None


def bracket(xs: list[float], x: float) -> tuple[list[tuple[int, float]], str]:
    """Where x lies among the sorted measured xs -> ([(index, weight)], "at" | "between" | "below" | "above");
    "at" a measurement x affords (x in [xs_i, xs_i (1 + NEAR)]: never one that costs more than x), "between"
    weights linear in log x."""
    for i in reversed(range(len(xs))):
        if xs[i] <= x <= xs[i] * (1 + NEAR):
            return [(i, 1.0)], "at"
    if x < xs[0]:
        return [(0, 1.0)], "below"
    if x > xs[-1]:
        return [(len(xs) - 1, 1.0)], "above"
    i = max(j for j in range(len(xs)) if xs[j] < x)
    w = math.log(x / xs[i]) / math.log(xs[i + 1] / xs[i])
    return [(i, 1.0 - w), (i + 1, w)], "between"


def per_domain(rows: list[dict]) -> bool:
    """A row without shared pretraining (slm-is, slm-nopt): everything it spends is paid once per domain."""
    return all(not r["pretrain_flops"] for r in rows)


def _points(rows: list[dict], size: str) -> list[dict]:
    """One row's measurements at one data size, sorted by what its budget is measured in."""
    own = per_domain(rows)
    pts = []
    for r in rows:
        if not own and not r["pretrain_flops"]:
            continue  # a budget whose pretraining is not finished (aggregate's 0): nothing measured there
        if size in r["after"] and size in r["specialize_flops"]:
            ci = (r.get("after_ci") or {}).get(size)
            pts.append({"x": r["specialize_flops"][size] if own else r["pretrain_flops"], "ppl": r["after"][size],
                        "ci": ci, "n": (r.get("after_n") or {}).get(size, 1), "spec": r["specialize_flops"][size],
                        "pre": r["pretrain_flops"], "params": r.get("params"), "budget": r.get("budget"),
                        "cap_hit": (r.get("cap_hit") or {}).get(size, [0, 0])})
    return sorted(pts, key=lambda p: p["x"])


def _mix(pts: list[dict], weights: list[tuple[int, float]]) -> dict:
    out = {k: sum(w * pts[i][k] for i, w in weights) for k in ("x", "ppl", "spec", "pre")}
    cis = [pts[i]["ci"] for i, _ in weights]
    out["ci"] = None if None in cis else sum(w * c for (_, w), c in zip(weights, cis))
    out["n"] = min(pts[i]["n"] for i, _ in weights)
    out["params"] = max((pts[i]["params"] or 0 for i, _ in weights), default=0) or None
    out["cap_hit"] = [sum(pts[i]["cap_hit"][j] for i, _ in weights) for j in (0, 1)]
    # the grid budgets it came from (a mix of mixes: across data sizes, of their budgets)
    out["budgets"] = list(dict.fromkeys(b for i, _ in weights for b in pts[i].get("budgets", [pts[i].get("budget")])))
    return out


def _at_budget(rows: list[dict], size: str, b: Budgets) -> tuple[dict | None, str, str]:
    """The row's measurement at the user's budget for one size -> (estimate or None, where, why not)."""
    pts = _points(rows, size)
    if not pts:
        return None, "", "not measured at this data size"
    own = per_domain(rows)
    budget = b.specialize_flops if own else b.pretrain_flops
    weights, where = bracket([p["x"] for p in pts], budget)
    if where == "below":
        if own:
            return None, where, (f"it pays its pretraining per domain: the least measured costs {pts[0]['x']:.3g} "
                                 f"FLOPs per domain > your specialization budget {budget:.3g}")
        return None, where, (f"the least pretraining measured for it costs {pts[0]['x']:.3g} FLOPs > your "
                             f"{budget:.3g}: below the measured range, no estimate")
    est = _mix(pts, weights)
    est["range"] = (pts[0]["x"], pts[-1]["x"])
    return est, where, ""


def estimate(rows: list[dict], sizes: list[str], tokens: dict[str, float], b: Budgets) -> dict:
    """One row (at one specialization-budget setting) at the user's budgets -> {fits, why, ppl, ci, lo, hi, n,
    c_pretrain, c_specialize, params, notes, outside}. rows: the row's entries, one per pretraining budget."""
    own = per_domain(rows)
    have = [s for s in sizes if _points(rows, s)]
    out = {"per_domain": own, "fits": False, "why": "", "ppl": None, "ci": None, "lo": None, "hi": None, "n": 0,
           "c_pretrain": None, "c_specialize": None, "params": None, "notes": [], "outside": False}
    if not have:
        out["why"] = "not measured (no data size with every domain finished)"
        return out
    have.sort(key=lambda s: tokens[s])
    want = b.domain_tokens or tokens[have[-1]]
    sw, s_where = bracket([tokens[s] for s in have], want)
    parts, wheres = [], []
    for i, w in sw:
        est, where, why = _at_budget(rows, have[i], b)
        wheres.append(where)
        if est is None:
            out["why"] = why
            cheapest = _points(rows, have[i])
            if cheapest:  # its cheapest measured configuration: for the cost plot
                out["c_pretrain"], out["c_specialize"] = cheapest[0]["pre"], cheapest[0]["spec"]
                out["params"] = cheapest[0]["params"]
            return out
        parts.append((est, w))
    est = _mix([p for p, _ in parts], [(i, w) for i, (_, w) in enumerate(parts)])
    where = next(w for w in ("above", "between", "at") if w in wheres)  # the least measured of the sizes' readings
    lo, hi = parts[0][0]["range"]
    name, budget = ("specialization", b.specialize_flops) if own else ("pretraining", b.pretrain_flops)
    basis = {"at": f"measured at {name} {est['x']:.3g} FLOPs" + ("" if est["x"] == budget else
                                                                  f" (your {budget:.3g}: at most {NEAR:.0%} more)"),
             "between": f"interpolated between the measured {name} budgets {lo:.3g} and {hi:.3g} FLOPs",
             "above": f"{name} {budget:.3g} FLOPs is outside the measured range (largest measured {hi:.3g}): the "
                      f"figure is the one measured there"}[where]
    out["notes"].append(basis)
    have_tok = [tokens[s] for s in have]
    if s_where in ("below", "above"):
        near = have_tok[sw[0][0]]
        out["notes"].append(f"{want:,.0f} domain tokens is outside the measured range ({min(have_tok):,.0f}-"
                            f"{max(have_tok):,.0f}): the figure is the one measured at {near:,.0f}")
    elif s_where == "between":
        out["notes"].append(f"interpolated between the measured data sizes {have_tok[sw[0][0]]:,.0f} and "
                            f"{have_tok[sw[1][0]]:,.0f} tokens")
    out["cap_hit"] = est["cap_hit"]  # [cells stopped by the fine-tuning step cap at their best evaluation, cells]
    out["outside"] = where == "above" or s_where in ("below", "above")
    pre = 0.0 if own else (budget if where == "between" else est["pre"])
    out.update(ppl=est["ppl"], ci=est["ci"], n=est["n"], c_pretrain=pre, c_specialize=est["spec"],
               params=est["params"], budgets=est["budgets"])
    if est["ci"] is not None:
        out["lo"], out["hi"] = est["ppl"] - est["ci"], est["ppl"] + est["ci"]
    if b.max_params and est["params"] and est["params"] > b.max_params:
        out["why"] = f"deploys {est['params']:,} parameters > your inference cap {b.max_params:,}"
    elif not own and est["spec"] > b.specialize_flops * (1 + 1e-9):
        out["why"] = (f"its specialization costs {est['spec']:.3g} FLOPs per domain > your specialization budget "
                      f"{b.specialize_flops:.3g}")
    else:
        out["fits"] = True
    return out


def _groups(grid: dict) -> dict[str, dict]:
    """rows -> {row name: {axis value: [entries, one per pretraining budget]}} (one axis value None without axis)."""
    out: dict[str, dict] = {}
    for r in grid["rows"]:
        out.setdefault(r["row"], {}).setdefault(r.get(grid["axis"]) if grid["axis"] else None, []).append(r)
    return out


def plan(grid: dict, b: Budgets) -> dict:
    """Every row of the grid at the user's budgets -> {methods: {row: estimate}, recommendation, crossovers}.
    With a specialization-budget axis, each row's setting is the best-scoring one that fits the user's budget."""
    methods = {}
    for name, by_axis in _groups(grid).items():
        ests = []
        for value, rows in by_axis.items():
            e = with_rules(estimate(rows, grid["sizes"], grid["tokens_per_size"], b), rows, grid, b)
            e.update(row=name, method=rows[0].get("method", name), spec_setting=value)
            e["c_total"] = None if e["c_pretrain"] is None else c_total(e["c_pretrain"], e["c_specialize"],
                                                                         b.n_domains)
            ests.append(e)
        fit = [e for e in ests if e["fits"] and e["ppl"] is not None]
        best = min(fit, key=lambda e: e["ppl"]) if fit else min(
            ests, key=lambda e: math.inf if e["c_specialize"] is None else e["c_specialize"])
        best["alternatives"] = [{k: e.get(k) for k in ("spec_setting", "select", "fits", "why", "ppl", "ci",
                                                       "c_specialize")}
                                for e in ests if e is not best]
        methods[name] = best
    rec = recommend(methods, b.n_domains)
    return {"budgets": vars(b), "axis": grid["axis"], "methods": methods, "recommendation": rec,
            "crossovers": crossovers(methods), "crossover_ref": crossover_ref(methods, rec["method"])}


def with_rules(own: dict, rows: list[dict], grid: dict, b: Budgets) -> dict:
    """The row's estimate with its own selection rule, or a selection rule's that fits and beats it beyond the
    noise (its 95% interval wholly below the own rule's); the lowest such. Notes say which, or that none did."""
    selects = list(dict.fromkeys(t["select"] for r in rows for ts in (r.get("rules") or {}).values() for t in ts))
    if not selects:
        return own
    tried = {sel: estimate(rule_rows(rows, sel), grid["sizes"], grid["tokens_per_size"], b) for sel in selects}
    beats = {sel: e for sel, e in tried.items() if e["fits"] and e["ppl"] is not None and own["ppl"] is not None
             and apart_below(e, own)}
    if not beats:
        own["notes"].append(f"selection rules {', '.join(selects)}: none beats the row's own rule beyond the noise "
                            f"(intervals overlap, or it does not fit): its own rule is kept")
        own["select"] = None
        return own
    sel = min(beats, key=lambda k: beats[k]["ppl"])
    e = beats[sel]
    e["notes"].append(f"selection rule {sel} beats the row's own rule beyond the noise: {_ci(e)} vs {_ci(own)} "
                      f"(intervals apart), at {e['c_specialize']:.3g} vs {own['c_specialize']:.3g} FLOPs per domain")
    e["select"], e["own_rule"] = sel, {k: own[k] for k in ("ppl", "ci", "lo", "hi", "c_specialize", "fits")}
    return e


def apart_below(a: dict, b: dict) -> bool:
    """a is better than b beyond the noise: both have intervals and a's lies wholly below b's."""
    return a["ci"] is not None and b["ci"] is not None and a["hi"] < b["lo"]


def crossover_ref(methods: dict[str, dict], pick: str | None) -> str | None:
    """The shared-pretraining row slm-is is weighed against: the recommended one, else the best that fits, else
    the slm."""
    shared = {k: e for k, e in methods.items() if not e["per_domain"] and e["c_specialize"] is not None}
    if pick in shared:
        return pick
    fit = [k for k, e in shared.items() if e["fits"] and e["ppl"] is not None]
    if fit:
        return min(fit, key=lambda k: shared[k]["ppl"])
    return "slm" if "slm" in shared else next(iter(shared), None)


def overlap(a: dict, b: dict) -> bool:
    """Two estimates cannot be told apart: their 95% intervals overlap (or one of them has none: one seed)."""
    if a["ci"] is None or b["ci"] is None:
        return True
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


def worst(e: dict) -> float:
    """The upper end of an estimate's 95% interval (the mean for one seed): how bad it plausibly is."""
    return e["ppl"] if e["hi"] is None else e["hi"]


def recommend(methods: dict[str, dict], n: int) -> dict:
    """Verdicts against the best expected perplexity among the methods that fit ("no difference" where the
    intervals overlap), and the recommendation: the method whose interval reaches least far up (the lowest
    plausible worst case, so a mean made good by one lucky seed does not win), or one not told apart from it whose
    worst case is within SAME_COST of its own and whose C_total(N) is cheaper beyond SAME_COST."""
    fit = {k: e for k, e in methods.items() if e["fits"] and e["ppl"] is not None}
    for k, e in methods.items():
        e["verdict"] = "" if e["fits"] else e["why"] if e["why"].startswith("not measured") else \
            f"does not fit: {e['why']}"
    if not fit:
        return {"method": None, "reason": "no method in the grid fits these budgets (each one's reason is above)"}
    best = min(fit, key=lambda k: fit[k]["ppl"])
    tied = [k for k, e in fit.items() if overlap(e, fit[best])]
    for k, e in fit.items():
        e["verdict"] = ("best expected perplexity" if k == best else
                        ("no difference (one seed: no interval)" if e["ci"] is None or fit[best]["ci"] is None
                         else "no difference (intervals overlap)") if k in tied else "worse (intervals apart)")
    safe = min(fit, key=lambda k: (worst(fit[k]), fit[k]["ppl"]))
    cheaper = [k for k in fit if overlap(fit[k], fit[safe]) and worst(fit[k]) <= worst(fit[safe]) * (1 + SAME_COST)
               and fit[k]["c_total"] * (1 + SAME_COST) < fit[safe]["c_total"]]
    pick = min(cheaper, key=lambda k: fit[k]["c_total"]) if cheaper else safe
    e, others = fit[pick], [k for k in tied if k != pick]
    if pick != safe:
        reason = (f"no difference from {safe} ({_ci(fit[safe])} vs {_ci(e)}: intervals overlap, worst cases within "
                  f"{SAME_COST:.0%}) and cheaper for N={n}: C_total {e['c_total']:.3g} vs {fit[safe]['c_total']:.3g} "
                  f"FLOPs")
    elif pick == best and not others:
        reason = (f"lowest expected macro perplexity, {_ci(e)}; every other method that fits is worse beyond its "
                  f"interval")
    elif pick == best:
        reason = (f"lowest expected macro perplexity, {_ci(e)}, and the lowest upper bound; no difference from "
                  f"{', '.join(others)} (intervals overlap)")
    else:
        reason = (f"no difference from the best expected perplexity ({best}: {_ci(fit[best])}) and the lowest upper "
                  f"bound, {_ci(e)}: the safest of the methods that fit")
    if e["outside"]:
        reason += "; its figure lies outside the measured range (see its notes)"
    return {"method": pick, "best_ppl": best, "tied": tied, "reason": reason}


def _ci(e: dict) -> str:
    return f"{e['ppl']:.2f}" + ("" if e["ci"] is None else f" [{e['lo']:.2f}, {e['hi']:.2f}]")


def crossovers(methods: dict[str, dict]) -> list[dict]:
    """For each row without shared pretraining (slm-is) against each row with it: the number of domains beyond
    which the per-domain row costs more in total (N* = C_pretrain / (C_spec_per_domain - C_spec)); none when it
    stays cheaper at every N."""
    out = []
    for d, de in methods.items():
        if not de["per_domain"] or de["c_specialize"] is None:
            continue
        for s, se in methods.items():
            if se["per_domain"] or se["c_specialize"] is None:
                continue
            gap = de["c_specialize"] - se["c_specialize"]
            out.append({"per_domain": d, "shared": s,
                        "n": se["c_pretrain"] / gap if gap > 0 else None})
    return out
