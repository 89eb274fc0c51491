"""A grid's results.json as the planner reads it (mlx_pn.compare.plan): checked, and packed small enough to ship.

The reader is tolerant: it needs only `rows` (the per-budget means with their intervals, results.aggregate) and
`sizes`; the actual domain tokens per size come from `cells` (or the packed `tokens_per_size`). A grid that
records `settings` (mlx_pn.compare.grid.collect: per label a data size, a fine-tuning step cap and a selection
rule) gives the specialization-budget axis: its caps (a small fixed number of steps beside early stopping), each
at its measured specialization cost (mlx_pn.compare.grid_settings). Older grids key their numbers by data size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlx_pn.compare.grid_settings import check_settings, expand
from mlx_pn.config import ConfigError

# The grid `mlx-pn plan` reads without --grid: a packed copy of a grid under docs/ (tools/pack_grid.py writes it).
# To ship another grid, pack it and change this one line.
DEFAULT_GRID = Path(__file__).resolve().parent / "grids" / "compare-d128.json"

_ROW_KEYS = ("row", "after", "pretrain_flops", "specialize_flops")  # what every row must have
_KEEP = ("row", "method", "budget", "params", "pretrain_flops", "after", "after_ci", "after_n", "specialize_flops",
         "seeds", "cap_hit")  # what pack() keeps of a row


def _fail(path, field: str, what: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {field}: {what}; {fix}")


def load_grid(path: str | Path | None = None) -> dict:
    """-> {path, rows, sizes, tokens_per_size, axis, domains, seeds, config}; ConfigError (one line: the file, the
    field and the fix) when the file is not a grid's results.json."""
    path = Path(path) if path else DEFAULT_GRID
    fix = "pass the results.json an `mlx-pn compare` run wrote (OUT/results.json) with --grid"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({str(e)[:80]}); {fix}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise _fail(path, "rows", "missing or empty (no finished cell)", f"{fix}, after at least one finished cell")
    for i, r in enumerate(data["rows"]):
        missing = [k for k in _ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise _fail(path, f"rows[{i}].{missing[0]}", "missing", f"{fix} (rebuild it with --report-only)")
        check_row(r, f"rows[{i}]", path, fix)
    cells, rows, axis = data.get("cells") or [], data["rows"], None
    if "settings" in data:
        settings = check_settings(data["settings"], path, fix)
        labels = [s["label"] for s in settings]
        with_cap_hits(rows, cells)  # per label, before the rows are keyed by data size
        rows, sizes, tokens, axis = expand(rows, settings, data.get("tokens_per_size") or _tokens_per_size(cells,
                                                                                                           labels))
    else:
        one_setting(rows, path, fix)
        sizes = [str(s) for s in data.get("sizes") or sorted({s for r in rows for s in r["after"]}, key=int)]
        tokens = data.get("tokens_per_size") or _tokens_per_size(cells, sizes)
        with_cap_hits(rows, cells)
    for s in sizes:
        if not tokens.get(s):
            if s == "0":
                raise _fail(path, "cells", "no cell says how many tokens 'the whole split' (size 0) is",
                            f"{fix} (its cells carry domain_tokens)")
            tokens[s] = float(s)  # a size in tokens is its own count
    shown = f"the packaged {path.name}, packed from {data.get('source')}" if path == DEFAULT_GRID else str(path)
    return {"path": str(path), "shown": shown, "rows": rows, "sizes": sizes, "tokens_per_size": tokens,
            "axis": axis, "domains": data.get("domains", []), "seeds": data.get("seeds", []),
            "config": data.get("config", {})}


def _number(v, positive: bool = False) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    return ok and (v > 0 if positive else v >= 0)


def check_row(r: dict, where: str, path, fix: str) -> None:
    """A row's numbers are numbers: perplexities and specialization costs > 0, pretraining cost >= 0, intervals
    >= 0 or null (one seed), parameters a count or null."""
    if not _number(r["pretrain_flops"]):
        raise _fail(path, f"{where}.pretrain_flops", f"{r['pretrain_flops']!r} is not a FLOP count >= 0", fix)
    for key, positive, nullable in (("after", True, False), ("specialize_flops", True, False),
                                    ("after_ci", False, True)):
        d = r.get(key, {})
        if not isinstance(d, dict):
            raise _fail(path, f"{where}.{key}", f"{d!r} is not a mapping of data size -> value", fix)
        for size, v in d.items():
            if not (v is None and nullable) and not _number(v, positive):
                raise _fail(path, f"{where}.{key}.{size}", f"{v!r} is not a number {'> 0' if positive else '>= 0'}",
                            fix)
    if r.get("params") is not None and not (isinstance(r["params"], int) and r["params"] > 0):
        raise _fail(path, f"{where}.params", f"{r['params']!r} is not a parameter count", fix)


def _tokens_per_size(cells: list[dict], sizes: list[str]) -> dict[str, float]:
    """Mean domain train tokens of each size's cells (size 0 is the whole split: its count differs per domain)."""
    out = {}
    for s in sizes:
        got = [c["domain_tokens"] for c in cells if str(c.get("size")) == s and c.get("domain_tokens")]
        if got:
            out[s] = float(np.mean(got))
    return out


def with_cap_hits(rows: list[dict], cells: list[dict]) -> None:
    """Each row's `cap_hit` {size: [cells whose fine-tuning stopped at its step cap at its best evaluation, cells]}:
    there the cap, not the method, set the figure (validation was still falling). From `stopped_by` where cells
    record it, else from the steps run against the cell config's finetune.steps (size: the cell's setting label in a
grid with settings). Rows that have it keep theirs."""
    hits: dict[tuple, list[int]] = {}
    for c in cells:
        steps, best = c.get("finetune_steps"), c.get("best_step")
        cap = c.get("step_cap", ((c.get("config") or {}).get("finetune") or {}).get("steps"))
        capped = c["stopped_by"] == "steps" if c.get("stopped_by") else bool(cap) and steps == cap
        h = hits.setdefault((c.get("row"), c.get("budget"), str(c.get("size"))), [0, 0])
        h[0] += bool(capped and best == steps)
        h[1] += 1
    for r in rows:
        if "cap_hit" not in r:
            key = (r["row"], r.get("budget"))
            got = {s: h for (*k, s), h in hits.items() if tuple(k) == key}
            if got:
                r["cap_hit"] = got


def one_setting(rows: list[dict], path, fix: str) -> None:
    """A grid without `settings` has one fine-tuning setting: each (row, budget) once."""
    seen = set()
    for r in rows:
        key = (r["row"], r.get("budget"))
        if key in seen:
            raise _fail(path, "rows", f"row {r['row']!r} appears twice at budget {r.get('budget')} and the file has no "
                        "`settings` telling the two apart", f"{fix} (rebuild it with --report-only: it records each "
                        "setting's label, data size, step cap and selection rule)")
        seen.add(key)


def pack(results: dict, source: str) -> dict:
    """The part of a results.json the planner reads (no per-cell configs): a few kB instead of MBs, to ship."""
    cfg = results.get("config", {})
    rows = [dict(r) for r in results["rows"]]
    with_cap_hits(rows, results.get("cells", []))
    rows = [{k: r[k] for k in _KEEP if k in r} for r in rows]
    sizes = [str(s) for s in results["sizes"]]
    settings = {"settings": results["settings"]} if "settings" in results else {}
    return {"source": source, "domains": results.get("domains", []), "sizes": sizes, **settings,
            "budgets": results.get("budgets", []), "seeds": results.get("seeds", []), "rows": rows,
            "tokens_per_size": _tokens_per_size(results.get("cells", []), sizes),
            "config": {k: cfg[k] for k in ("model", "large", "pretrain", "finetune", "data", "grid") if k in cfg}}
