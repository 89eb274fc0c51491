"""A grid's specialization settings (results["settings"], written by mlx_pn.compare.grid.collect) as the planner
reads them: per row, one entry per fine-tuning step cap (the specialization-budget axis: a small fixed number of
steps, or early stopping), its numbers keyed by domain data size; the selection-rule settings of the same size and
cap ride along as that entry's `rules` (alternatives to the row's own rule)."""

from __future__ import annotations

from mlx_pn.config import ConfigError

AXIS = "fine-tuning"  # the name the planner shows for the axis: "[fine-tuning = <= 200 steps]"
PER_LABEL = ("after", "after_ci", "after_n", "specialize_flops", "cap_hit")  # a row's numbers keyed by setting


def cap_text(cap) -> str:
    """A step cap as the planner shows it: 0 is early stopping, None the config's finetune.steps."""
    return "the config's step cap" if cap is None else "early stopping" if cap == 0 else f"<= {cap} steps"


def check_settings(settings, path, fix: str) -> list[dict]:
    """results["settings"]: a list of {label, size, cap, select}; ConfigError (one line) naming the entry."""
    if not isinstance(settings, list) or not settings:
        raise ConfigError(f"{path}: settings: {settings!r} is not a list of settings; {fix}")
    for i, s in enumerate(settings):
        bad = ("label" if not isinstance(s, dict) or not isinstance(s.get("label"), str) else
               "size" if not isinstance(s.get("size"), int) or s["size"] < 0 else
               "cap" if s.get("cap") is not None and (not isinstance(s["cap"], int) or s["cap"] < 0) else
               "select" if not isinstance(s.get("select", ""), str) else None)
        if bad:
            raise ConfigError(f"{path}: settings[{i}].{bad}: {s!r} is not a setting {{label, size, cap, select}}; "
                              f"{fix}")
    if not any(not s.get("select") for s in settings):
        raise ConfigError(f"{path}: settings: no setting with the rows' own selection rule (select \"\"); {fix}")
    return settings


def _rule(r: dict, s: dict) -> dict:
    lab = s["label"]
    return {"select": s["select"], "after": r["after"][lab], "after_ci": (r.get("after_ci") or {}).get(lab),
            "after_n": (r.get("after_n") or {}).get(lab, 1), "specialize_flops": r["specialize_flops"][lab],
            "cap_hit": (r.get("cap_hit") or {}).get(lab, [0, 0])}


def expand(rows: list[dict], settings: list[dict], tokens_by_label: dict) -> tuple[list[dict], list[str], dict, str]:
    """Rows keyed by setting label -> (rows keyed by data size, one per (row, budget, cap), with `rules`
    {size: [rule's numbers]}; the data sizes; their tokens; the axis field or None when there is one cap)."""
    plain = [s for s in settings if not s.get("select")]
    caps = list(dict.fromkeys(s.get("cap") for s in plain))
    axis = AXIS if len(caps) > 1 else None
    out = []
    for r in rows:
        base = {k: v for k, v in r.items() if k not in PER_LABEL}
        entries = []
        for cap in caps:
            e = dict(base, **{k: {} for k in PER_LABEL}, rules={})
            if axis:
                e[axis] = cap_text(cap)
            for s in plain:
                if s.get("cap") != cap or s["label"] not in r["after"]:
                    continue
                size = str(s["size"])
                for k in PER_LABEL:
                    if s["label"] in (r.get(k) or {}):
                        e[k][size] = r[k][s["label"]]
                rules = [_rule(r, t) for t in settings if t.get("select") and t["size"] == s["size"]
                         and t.get("cap") == cap and t["label"] in r["after"] and t["label"] in r["specialize_flops"]]
                if rules:
                    e["rules"][size] = rules
            entries.append(e)
        out += [e for e in entries if e["after"]] or entries[:1]  # a row with nothing finished: "not measured"
    sizes = list(dict.fromkeys(str(s["size"]) for s in plain))
    tokens = {}
    for s in sorted(settings, key=lambda s: bool(s.get("select"))):  # a plain setting's count first
        if tokens_by_label.get(s["label"]):
            tokens.setdefault(str(s["size"]), float(tokens_by_label[s["label"]]))
    return out, sizes, tokens, axis


def rule_rows(rows: list[dict], select: str) -> list[dict]:
    """One (row, cap) entry's rows with the numbers of selection rule `select` in place of its own rule's (sizes
    where the rule was not run are left out: not measured there)."""
    out = []
    for r in rows:
        e = dict(r, **{k: {} for k in PER_LABEL}, rules={})
        for size, rules in (r.get("rules") or {}).items():
            for t in rules:
                if t["select"] == select:
                    for k in PER_LABEL:
                        e[k][size] = t[k]
        out.append(e)
    return out
