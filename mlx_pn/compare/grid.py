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
from mlx_pn.config import (Config, ConfigError, _f, check_name, leaf_keys, parse_value, set_key, to_dict,
                            validate)
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
    seeds: str = _f("0,1,2", "comma-separated seeds, each a full replicate under OUT/s{seed}/ (pretrain.seed and "
                             "finetune.seed: initialisation and data order); tables show the mean and a 95% interval")
    lr_sweep: str = _f("", "comma-separated multipliers of pretrain.lr (and min_lr) tried for each row with its own "
                           "generic pretraining at the smallest budget and pretrain.seed, under OUT/sweep/; the lowest "
                           "generic validation loss wins at every budget and seed (empty = no sweep: pretrain.lr)")

    def check(self, name: str = "grid") -> None:
        for variant in self.variants:  # each becomes a folder b{budget}/variant-NAME
            check_name(variant, f"{name}.variants")


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
        check_name(name, "grid.variants")
        ov = {}
        for item in str(spec).split():
            k, sep, v = item.partition("=")
            if not sep or k not in keys:
                raise ConfigError(f"grid.variants.{name}: '{item}' is not KEY=VALUE with a config key (e.g. "
                                  f"model.share_ffn=true)")
            if k in ("out", "data.dir"):  # a row writes under the grid's --out, beside the other rows
                raise ConfigError(f"grid.variants.{name}: '{k}' cannot vary per row (every row writes under "
                                  f"--out); run a second grid with its own --out instead")
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


def seeds(cfg: CompareConfig) -> list[int]:
    s = _csv(cfg.grid.seeds, "seeds", int)
    if not s or len(set(s)) != len(s) or min(s) < 0:
        raise ConfigError(f"grid.seeds must be distinct non-negative integers, e.g. '0,1,2'; got {cfg.grid.seeds!r}")
    return s


def row_config(base: CompareConfig, row: Row, budget: float | None, vocab: int, k: int, seed: int | None = None,
               lr_mult: float = 1.0, out: str | Path | None = None) -> Config:
    """The stage config of one row at one budget and seed (default: the first of grid.seeds): out folder
    (OUT/s{seed}/b{budget}/..., or under `out`), method, overrides, seeds, learning rate x lr_mult,
    FLOPs-matched steps."""
    c = Config(**{f.name: copy.deepcopy(getattr(base, f.name)) for f in dataclasses.fields(Config)})
    c.data.dir = str(base.data_dir)
    c.method = row.method
    seed = seeds(base)[0] if seed is None else seed
    root = Path(out or base.out) / f"s{seed}" / ("nopt" if budget is None else _bname(budget))
    c.out = str(root / f"variant-{row.name}" if row.overrides else root)
    keys = leaf_keys(Config)
    for key, text in row.overrides.items():
        set_key(c, key, parse_value(text, keys[key][0], key, f"grid.variants.{row.name}"))
    c.pretrain.seed = c.finetune.seed = seed  # a replicate: initialisation and data order
    c.pretrain.lr, c.pretrain.min_lr = c.pretrain.lr * lr_mult, c.pretrain.min_lr * lr_mult
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

    rows, bs, ns, ss = grid_rows(cfg), budgets(cfg), sizes(cfg), seeds(cfg)
    data = prepare_data(cfg, log=log)
    domains = grid_domains(cfg, data)
    k = _clusters(cfg, data, rows, log)
    vocab = data.tokenizer.vocab_size
    log(time_estimate(cfg, rows, bs, ns, domains, vocab, k))  # measured once per machine (OUT/costs/)
    t0 = time.time()
    mults = lr_multipliers(lr_sweep(cfg, rows, vocab, k, run=(data, domains, log)), rows)
    # seed by seed, so that an interrupted grid has whole replicates
    cells = [(r, b, s) for s in ss for b in bs for r in rows if METHODS[r.method].budgeted]
    cells += [(r, None, s) for s in ss for r in rows if not METHODS[r.method].budgeted]
    cells.sort(key=lambda c: ss.index(c[2]))
    for i, (row, b, s) in enumerate(cells):
        c = row_config(cfg, row, b, vocab, k, seed=s, lr_mult=mults[row.name])
        where = f"[compare {i + 1}/{len(cells)}] {row.name}" + ("" if b is None else f" @ budget {b:g}") + f" seed {s}"
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


def time_estimate(cfg: CompareConfig, rows: list[Row], bs: list[float], ns: list[int], domains: list[str], vocab: int,
                  k: int, measure=None) -> str:
    """'this grid takes about N hours on this machine': the grid's training FLOPs (every row's pretraining at its
    matched steps, its fine-tuning steps per domain and size, every seed) over the small model's training rate
    measured here (mlx_pn.costs.calibrated_rate). Evaluation, clustering and teachers' forwards are not counted."""
    from mlx_pn.costs import calibrated_rate, duration_text, measure_train_rate, train_flops_per_token
    from mlx_pn.models.build import model_args

    flops = 0.0
    for row in rows:
        for b in bs if METHODS[row.method].budgeted else [None]:
            c = row_config(cfg, row, b, vocab, k)
            p, f = c.pretrain, c.finetune
            if b is not None:
                flops += METHODS[row.method].flops_per_token(c, vocab, k) * p.steps * p.batch_size * p.grad_accum * p.seq_len
            per_token = train_flops_per_token(model_args(c.model, vocab), f.seq_len)
            flops += per_token * f.steps * f.batch_size * f.grad_accum * f.seq_len * len(domains) * len(ns)
    flops *= len(_csv(getattr(cfg.grid, "seeds", "0"), "seeds", int))
    if cfg.model.frontend != "token":
        return f"[compare] this grid trains {flops:.3g} FLOPs (no time estimate for model.frontend={cfg.model.frontend})"
    rate, cached = calibrated_rate(model_args(cfg.model, vocab), cfg.pretrain.seq_len, cfg.pretrain.batch_size,
                                   cfg.out, cfg.pretrain.precision, cfg.pretrain.compile,
                                   measure=measure or measure_train_rate)
    return (f"[compare] this grid takes {duration_text(flops / rate)} on this machine: {flops:.3g} training FLOPs at "
            f"{rate / 1e9:.2f} GFLOP/s ({'cached' if cached else 'measured now'}: {Path(cfg.out) / 'costs'})")


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
    """Every finished cell's numbers from the stage files -> {cells, runs (one entry per row, budget and
    seed), rows (their means and intervals over the seeds), paired (differences to the slm by seed), lr_sweep}."""
    from mlx_pn.compare.results import aggregate, paired_differences
    from mlx_pn.methods.layout import specialize_dir

    sweep = lr_sweep(cfg, rows, vocab, k)
    mults = lr_multipliers(sweep, rows)
    cells, summary = [], []
    for s, row in [(s, r) for s in seeds(cfg) for r in rows]:
        for b in (bs if METHODS[row.method].budgeted else [None]):
            c = row_config(cfg, row, b, vocab, k, seed=s, lr_mult=mults[row.name])
            pre = METHODS[row.method].pretrain_summary(c)
            entry = {"row": row.name, "method": row.method, "budget": b, "pretrain_steps": c.pretrain.steps,
                     "overrides": row.overrides, "seed": c.pretrain.seed, "pretrain_lr": c.pretrain.lr,
                     "pretrain_flops": 0.0 if pre is None else pre["cost"]["flops"],
                     "pretrain_wall_s": 0.0 if pre is None else pre["cost"]["wall_s"],
                     "generic_valid_ppl": None if not pre or pre.get("best_valid_nll") is None
                     else math.exp(pre["best_valid_nll"]),
                     "before": {}, "after": {}, "bpb_after": {}, "specialize_flops": {}, "specialize_wall_s": {},
                     "params": None, "expert_cosine": (pre or {}).get("expert_cosine")}  # slm-pn/hn divergence
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
    return {"domains": domains, "sizes": ns, "budgets": bs, "seeds": seeds(cfg), "rows": aggregate(summary),
            "paired": paired_differences(summary, ns, BASE_METHOD), "lr_sweep": sweep, "runs": summary,
            "cells": cells, "config": to_dict(cfg)}


# --- the learning-rate sweep ------------------------------------------------------------------------


def swept(row: Row) -> bool:
    """Rows with a generic pretraining of their own (its summary's validation loss picks the rate); slm-is and
    slm-nopt have none, slm-d's is the slm's and the llm's."""
    m = METHODS[row.method]
    return m.budgeted and m.own_pretraining


def lr_sweep(cfg: CompareConfig, rows: list[Row], vocab: int, k: int, run=None) -> dict:
    """grid.lr_sweep: every swept row pretrained at pretrain.lr x each multiplier, at the smallest budget and
    pretrain.seed, under OUT/sweep/x{mult}/ (run=(data, domains, log): train what is missing; else only read)
    -> {row: {budget, seed, multipliers, lr, steps, valid_nll (None: not finished), winner (None: not all)}}."""
    mults = _csv(cfg.grid.lr_sweep, "lr_sweep", float)
    if any(m <= 0 for m in mults):
        raise ConfigError(f"grid.lr_sweep: multipliers of pretrain.lr must be > 0, got {cfg.grid.lr_sweep!r}")
    b, out = min(budgets(cfg)), {}
    for row in rows if mults else []:
        if not swept(row):
            continue
        nll = []
        for m in mults:
            c = row_config(cfg, row, b, vocab, k, seed=cfg.pretrain.seed, lr_mult=m,
                           out=Path(cfg.out) / "sweep" / f"x{m:g}")
            if run is not None:
                data, domains, log = run
                log(f"[compare lr sweep] {row.name} x{m:g} (lr {c.pretrain.lr:.3g}): pretraining {c.pretrain.steps} steps")
                METHODS[row.method].grid_pretrain(c, data, domains, log)
            pre = METHODS[row.method].pretrain_summary(c)
            nll.append(None if not pre or "cost" not in pre else pre.get("best_valid_nll"))
        if run is not None and None in nll:
            raise ConfigError(f"grid.lr_sweep: {row.name} has no generic validation loss to choose a rate by (is "
                              f"the generic valid split empty? data.valid_fraction={cfg.data.valid_fraction})")
        winner = None if None in nll else mults[int(np.argmin(nll))]
        out[row.name] = {"budget": b, "seed": cfg.pretrain.seed, "multipliers": mults,
                         "lr": [cfg.pretrain.lr * m for m in mults], "steps": c.pretrain.steps, "valid_nll": nll,
                         "winner": winner}
    return out


def lr_multipliers(sweep: dict, rows: list[Row]) -> dict[str, float]:
    """Each row's learning-rate multiplier: its sweep's winner; rows not swept take the slm's (1 without)."""
    base = (sweep.get(BASE_METHOD) or {}).get("winner") or 1.0
    return {r.name: (sweep.get(r.name) or {}).get("winner") or base for r in rows}


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








