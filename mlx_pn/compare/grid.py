"""The paper's experiment in miniature: every method pretrained at matched pretraining FLOPs, specialized on
every domain at several domain-data sizes, evaluated on each domain's test split.

Budgets are multiples of the slm's pretraining (grid.budgets x pretrain.steps slm steps); every other row gets
the number of steps whose training FLOPs match (mlx_pn.costs): the llm fewer, slm-pn/hn a few fewer (the
projection), slm-mix the same total over its k experts. slm-d reuses the slm and llm of the same budget (its
pretraining cost is their sum, as in the paper); slm-is spends the budget once per domain, as specialization
cost; slm-nopt has no pretraining and appears once.

Layout under OUT: b{budget}/ holds one budget's methods exactly as the stages write them (pretrain-METHOD/,
specialize-METHOD/DOMAIN[-NNNtok]/), b{budget}/variant-NAME/ a variant row (an slm with model overrides: the
STLM options), nopt/ the slm-nopt row; results.json, results.md and the PNG plots are rebuilt from those
files at the end of every run, so an interrupted grid continues where it stopped and no finished cell is
recomputed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlx_pn.compare.results import _macro, results_markdown
from mlx_pn.config import Config, ConfigError, _f, leaf_keys, parse_value, set_key, to_dict, validate
from mlx_pn.io import atomic_file, write_json_atomic
from mlx_pn.methods import METHODS, get
from mlx_pn.methods.layout import BASE_METHOD


@dataclass
class GridConfig:
    methods: str = _f(",".join(METHODS),
                      "comma-separated methods to compare (slm-d brings slm and llm along: it distills them)")
    variants: dict = _f({}, "extra slm rows NAME='key=value key=value' with model overrides, e.g. "
                            "'slm-shared-ffn=model.share_ffn=true model.num_hidden_layers=6' (the STLM options)")
    budgets: str = _f("1,2", "pretraining budgets, in units of pretrain.steps steps of the slm; every row gets the "
                             "steps that match that many FLOPs")
    domain_tokens: str = _f("0", "comma-separated fine-tuning data sizes in domain train tokens (0 = the whole split)")
    domains: str = _f("", "comma-separated subset of data.domains to specialize on (empty = all)")
    max_n: int = _f(50, "the C_total(N) plot runs N = 1..max_n domains")


@dataclass
class CompareConfig(Config):
    grid: GridConfig = field(default_factory=GridConfig)


@dataclass
class Row:
    name: str
    method: str
    overrides: dict = field(default_factory=dict)


def _csv(text: str, key: str, conv=str) -> list:
    try:
        return [conv(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"grid.{key}: expected comma-separated values, got {text!r}") from None


def grid_rows(cfg: CompareConfig) -> list[Row]:
    methods = _csv(cfg.grid.methods, "methods")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"grid.methods: unknown method '{m}' (known: {', '.join(METHODS)})")
    for m in list(methods):  # the rows a method reuses (slm-d: its student and teacher)
        methods += [b for b in METHODS[m].brings if b not in methods]
    order = list(METHODS)  # dependencies first
    rows = [Row(m, m) for m in sorted(set(methods), key=order.index)]
    keys = leaf_keys(Config)
    for name, spec in cfg.grid.variants.items():
        ov = {}
        for item in str(spec).split():
            k, sep, v = item.partition("=")
            if not sep or k not in keys:
                raise ConfigError(f"grid.variants.{name}: '{item}' is not KEY=VALUE with a config key (e.g. "
                                  f"model.share_ffn=true)")
            ov[k] = v
        rows.append(Row(name, ov.pop("method", BASE_METHOD), ov))
    return rows


def budgets(cfg: CompareConfig) -> list[float]:
    b = _csv(cfg.grid.budgets, "budgets", float)
    if not b or min(b) <= 0:
        raise ConfigError(f"grid.budgets must be positive numbers, got {cfg.grid.budgets!r}")
    return b


def sizes(cfg: CompareConfig) -> list[int]:
    return _csv(cfg.grid.domain_tokens, "domain_tokens", int)


def _bname(b: float) -> str:
    return f"b{b:g}"


def row_config(base: CompareConfig, row: Row, budget: float | None, vocab: int, k: int) -> Config:
    """The stage config of one row at one budget: out folder, method, overrides, FLOPs-matched steps."""
    c = Config(**{f.name: copy.deepcopy(getattr(base, f.name)) for f in dataclasses.fields(Config)})
    c.data.dir = str(base.data_dir)
    c.method = row.method
    root = Path(base.out) / ("nopt" if budget is None else _bname(budget))
    c.out = str(root / f"variant-{row.name}" if row.overrides else root)
    keys = leaf_keys(Config)
    for key, text in row.overrides.items():
        set_key(c, key, parse_value(text, keys[key][0], key, f"grid.variants.{row.name}"))
    validate(c)
    method = get(c.method)
    method.check(c)
    if budget is None:
        return c
    slm_steps = max(1, round(budget * base.pretrain.steps))
    f_slm = METHODS[BASE_METHOD].flops_per_token(base, vocab, k)
    # each row's own FLOPs per token (variants: their model; slm-mix: k experts sharing the steps)
    f = method.flops_per_token(c, vocab, k)
    c.pretrain.steps = max(1, round(slm_steps * f_slm / f))
    c.pretrain.warmup = min(c.pretrain.warmup, max(1, c.pretrain.steps // 10))
    return c


def run_grid(cfg: CompareConfig, log=print) -> dict:
    """Run (or continue) every cell, then write results.json, results.md and the plots."""
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.methods import specialize

    rows, bs, ns = grid_rows(cfg), budgets(cfg), sizes(cfg)
    data = prepare_data(cfg, log=log)
    domains = grid_domains(cfg, data)
    k = _clusters(cfg, data, rows, log)
    vocab = data.tokenizer.vocab_size
    cells = [(r, b) for b in bs for r in rows if METHODS[r.method].budgeted]
    cells += [(r, None) for r in rows if not METHODS[r.method].budgeted]
    t0 = time.time()
    for i, (row, b) in enumerate(cells):
        c = row_config(cfg, row, b, vocab, k)
        where = f"[compare {i + 1}/{len(cells)}] {row.name}" + ("" if b is None else f" @ budget {b:g}")
        log(f"{where}: pretraining {c.pretrain.steps} steps ({time.time() - t0:.0f} s elapsed)")
        METHODS[row.method].grid_pretrain(c, data, domains, log)
        for n in ns:
            for d in domains:
                specialize(c, data, d, log=log, domain_tokens=n)
        log(f"{where}: done")
    results = collect(cfg, rows, bs, ns, domains, vocab, k)
    write_results(cfg, results)
    log(f"[compare] {len(results['cells'])} cells in {time.time() - t0:.0f} s; results in {Path(cfg.out) / 'results.md'}")
    return results


def grid_domains(cfg: CompareConfig, data) -> list[str]:
    """grid.domains (checked against data.domains), or every domain."""
    domains = _csv(cfg.grid.domains, "domains") or data.domain_names()
    for d in domains:
        if d not in data.domain_names():
            raise ConfigError(f"grid.domains: '{d}' is not in data.domains ({', '.join(data.domain_names())})")
    return domains


def report_only(cfg: CompareConfig) -> dict:
    """Rebuild the results files from whatever cells have finished; trains nothing."""
    from mlx_pn.clustering.stage import clusters_root, load_clustering, window_len
    from mlx_pn.data.prepare import prepare_data

    rows, bs, ns = grid_rows(cfg), budgets(cfg), sizes(cfg)
    data = prepare_data(cfg, log=lambda *a: None)  # cached: only checks that the data is there
    domains = grid_domains(cfg, data)
    try:
        k = load_clustering(cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir),
                            cfg.cluster.k).k
    except FileNotFoundError:
        k = cfg.cluster.k
    results = collect(cfg, rows, bs, ns, domains, data.tokenizer.vocab_size, k)
    write_results(cfg, results)
    return results


def _clusters(cfg: Config, data, rows: list[Row], log) -> int:
    """Cluster once if a row needs it (routed methods: cluster.k; slm-is: cluster.k_importance) -> the k used."""
    from mlx_pn.clustering.stage import clusters_root, load_clustering, run_clustering, window_len

    ks = sorted({getattr(cfg.cluster, key) for r in rows for key in METHODS[r.method].clusterings})
    if ks:
        window, root = window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir)
        run_clustering(cfg.cluster, window, root, data, ks=ks, log=log)
        return load_clustering(cfg.cluster, window, root, cfg.cluster.k).k if cfg.cluster.k in ks else cfg.cluster.k
    return cfg.cluster.k


# --- results ------------------------------------------------------------------------------------------


def collect(cfg: CompareConfig, rows, bs, ns, domains, vocab: int, k: int) -> dict:
    """Every finished cell's numbers from the stage files -> {cells, rows}."""
    from mlx_pn.methods.layout import specialize_dir

    cells, summary = [], []
    for row in rows:
        for b in (bs if METHODS[row.method].budgeted else [None]):
            c = row_config(cfg, row, b, vocab, k)
            pre = METHODS[row.method].pretrain_summary(c)
            entry = {"row": row.name, "method": row.method, "budget": b, "pretrain_steps": c.pretrain.steps,
                     "overrides": row.overrides, "seed": c.pretrain.seed,
                     "pretrain_flops": 0.0 if pre is None else pre["cost"]["flops"],
                     "pretrain_wall_s": 0.0 if pre is None else pre["cost"]["wall_s"],
                     "generic_valid_ppl": None if not pre or pre.get("best_valid_nll") is None
                     else math.exp(pre["best_valid_nll"]),
                     "before": {}, "after": {}, "bpb_after": {}, "specialize_flops": {}, "specialize_wall_s": {},
                     "params": None}
            for n in ns:
                got = {}
                for d in domains:
                    p = specialize_dir(c, d, n) / "results.json"
                    if not p.exists():
                        continue
                    r = json.loads(p.read_text())
                    got[d] = r
                    entry["params"] = entry["params"] or _params(p.parent / "final" / "model.safetensors")
                    cells.append({"row": row.name, "method": row.method, "budget": b, "domain": d,
                                  "domain_tokens": r["domain_train_tokens"], "size": n,
                                  "before_nll": r["before"][d]["nll"], "after_nll": r["after"][d]["nll"],
                                  "before_ppl": r["before"][d]["ppl"], "after_ppl": r["after"][d]["ppl"],
                                  "generic_after_ppl": r["after"]["generic"]["ppl"],
                                  "bpb_after": r["after"][d].get("bpb"),
                                  "finetune_steps": r["finetune_steps"], "best_step": r["best_step"],
                                  "specialize_flops": r["cost"]["flops"], "specialize_wall_s": r["cost"]["wall_s"],
                                  "inference_flops_per_token": r["inference_flops_per_token"],
                                  "seed": r["config"]["finetune"]["seed"], "config": r["config"]})
                if len(got) == len(domains):  # macro averages only over complete sets of domains
                    entry["before"][str(n)] = _macro([g["before"][d]["nll"] for d, g in got.items()])
                    entry["after"][str(n)] = _macro([g["after"][d]["nll"] for d, g in got.items()])
                    entry["specialize_flops"][str(n)] = float(np.mean([g["cost"]["flops"] for g in got.values()]))
                    bpb = [g["after"][d].get("bpb") for d, g in got.items()]
                    entry["bpb_after"][str(n)] = float(np.mean(bpb)) if None not in bpb else None
                    entry["specialize_wall_s"][str(n)] = float(np.mean([g["cost"]["wall_s"] or 0
                                                                        for g in got.values()]))
            summary.append(entry)
    return {"domains": domains, "sizes": ns, "budgets": bs, "rows": summary, "cells": cells,
            "config": to_dict(cfg)}


def _params(weights: Path) -> int | None:
    """Parameters of a deployed model (its safetensors, less the byte model's constant byte table)."""
    import mlx.core as mx

    if not weights.exists():
        return None
    return int(sum(v.size for k, v in mx.load(str(weights)).items() if not k.endswith("byte_table")))






def write_results(cfg: CompareConfig, results: dict) -> None:
    from mlx_pn.compare.plots import plot_compare

    out = Path(cfg.out)
    write_json_atomic(out / "results.json", results)
    md = results_markdown(results, cfg)
    atomic_file(out / "results.md", lambda f: f.write(md.encode()))
    if any(e["after"] for e in results["rows"]):
        plot_compare(results, out, cfg.grid.max_n)








