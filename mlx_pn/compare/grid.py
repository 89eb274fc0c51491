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
    finetune_steps: str = _f("", "comma-separated fine-tuning step caps, each a specialization budget on the grid's "
                                 "axis, e.g. '200,0' (0 = no cap: early stopping and finetune.max_epochs end it); "
                                 "empty = finetune.steps alone")
    selects: str = _f("", "comma-separated selection rules (most-frequent, best-loss, histogram, all) tried by the "
                          "rows that pick a starting SLM (slm-pn, slm-hn, slm-mix) at the first specialization "
                          "budget, beside each row's own rule (histogram: slm-pn/hn only)")
    domains: str = _f("", "comma-separated subset of data.domains to specialize on (empty = all)")
    max_n: int = _f(50, "the C_total(N) plot runs N = 1..max_n domains")
    seeds: str = _f("0,1,2", "comma-separated seeds, each a full replicate under OUT/s{seed}/ (pretrain.seed and "
                             "finetune.seed: initialisation and data order); tables show the mean and a 95% interval")
    jobs: int = _f(1, "grid cells (one row at one budget and seed, with all its specializations) and learning-rate "
                      "sweep runs trained in this many processes at once, for a machine with many cores or a GPU "
                      "(each process holds its own models; its log: OUT/logs/), taken row by row in grid.methods' order, "
                      "every seed of a row before the next row; 1 = one after another here, seed by seed")
    lr_sweep: str = _f("", "comma-separated multipliers of pretrain.lr (and min_lr) tried for each row with its own "
                           "generic pretraining at the smallest budget and pretrain.seed, under OUT/sweep/; the lowest "
                           "generic validation loss wins at every budget and seed (empty = no sweep: pretrain.lr)")

    def check(self, name: str = "grid") -> None:
        if self.jobs < 1:
            raise ConfigError(f"{name}.jobs must be >= 1 (1 = one cell after another), got {self.jobs}")
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


@dataclass(frozen=True)
class Spec:
    """One specialization setting of the grid: the domain data size, the fine-tuning step cap (None: the
    config's finetune.steps) and the selection rule ("": the row's own). Its label keys results.json's per-setting
    numbers: the size alone ("0", "2048": a grid without caps or rules, as before) or SIZE:TAG ("0:cap200",
    "0:early", "0:cap200-best-loss"); its tag suffixes the specialization folders (specialize_tag)."""

    size: int
    cap: int | None = None
    select: str = ""

    @property
    def tag(self) -> str:
        if self.cap is None and not self.select:
            return ""
        cap = "" if self.cap is None else "early" if self.cap == 0 else f"cap{self.cap}"
        return "-".join(x for x in (cap, self.select) if x)

    @property
    def label(self) -> str:
        return f"{self.size}:{self.tag}" if self.tag else str(self.size)


def specs(cfg: CompareConfig) -> list[Spec]:
    """Every specialization setting: each size at each step cap, then each extra selection rule at the first cap."""
    caps = _csv(cfg.grid.finetune_steps, "finetune_steps", int) or [None]
    if any(c is not None and c < 0 for c in caps):
        raise ConfigError(f"grid.finetune_steps: step caps must be >= 0 (0 = no cap), got {cfg.grid.finetune_steps!r}")
    if 0 in caps and cfg.finetune.max_epochs <= 0:
        raise ConfigError("grid.finetune_steps: a cap of 0 (no cap) needs finetune.max_epochs > 0 to end the run")
    rules = _csv(cfg.grid.selects, "selects")
    from mlx_pn.config import SELECTS

    for r in rules:
        if r not in SELECTS or r == "auto":
            raise ConfigError(f"grid.selects: unknown rule '{r}' (known: "
                              f"{', '.join(x for x in SELECTS if x != 'auto')})")
    return [Spec(n, c) for n in sizes(cfg) for c in caps] + [Spec(n, caps[0], r) for n in sizes(cfg) for r in rules]


def _as_specs(ns: list) -> list[Spec]:
    """Settings as Spec values (a plain data size n is Spec(n): the grid before step caps and rules)."""
    return [n if isinstance(n, Spec) else Spec(int(n)) for n in ns]


def row_spec(row: Row, spec: Spec) -> Spec | None:
    """The setting a row actually runs for `spec`: None where it does not apply (a rule for a row that picks
    nothing, histogram for separate experts); the row's own rule maps to its plain setting (one folder)."""
    if not spec.select:
        return spec
    own = METHODS[row.method].select
    if not own or (spec.select == "histogram" and METHODS[row.method].experts):
        return None
    return Spec(spec.size, spec.cap) if spec.select == own else spec


def spec_config(c: Config, spec: Spec) -> Config:
    """A row's stage config for one specialization setting (its folder tag, step cap and rule)."""
    if not spec.tag:
        return c
    c = copy.deepcopy(c)
    c.specialize_tag = spec.tag
    if spec.cap is not None:
        c.finetune.steps = spec.cap
    if spec.select:
        c.select = spec.select
    return c


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

    rows, bs, ns, ss = grid_rows(cfg), budgets(cfg), specs(cfg), seeds(cfg)
    data = prepare_data(cfg, log=log)
    domains = grid_domains(cfg, data)
    k = _clusters(cfg, data, rows, log)
    vocab = data.tokenizer.vocab_size
    log(time_estimate(cfg, rows, bs, ns, domains, vocab, k))  # measured once per machine (OUT/costs/)
    t0 = time.time()
    if cfg.grid.jobs > 1:
        _in_processes(cfg, [_SweepRun(row, m) for row in rows if swept(row)
                            for m in _csv(cfg.grid.lr_sweep, "lr_sweep", float)], vocab, k, log, "lr sweep")
    # in processes, the sweep's runs are done by now: read them (a run in this process would say "already done")
    quiet = (data, domains, lambda *a: None) if cfg.grid.jobs > 1 else (data, domains, log)
    mults = lr_multipliers(lr_sweep(cfg, rows, vocab, k, run=quiet), rows)
    # seed by seed, so that an interrupted grid has whole replicates
    cells = [(r, b, s) for s in ss for b in bs for r in rows if METHODS[r.method].budgeted]
    cells += [(r, None, s) for s in ss for r in rows if not METHODS[r.method].budgeted]
    cells.sort(key=lambda c: ss.index(c[2]))
    if cfg.grid.jobs > 1:  # rows that reuse others' (slm-d: the llm's fine-tuned teacher) in a second wave
        # in parallel, row by row in grid.methods' order (every seed of the first rows first), budget by budget
        first = {m: i for i, m in enumerate(_csv(cfg.grid.methods, "methods"))}
        ordered = sorted(cells, key=lambda c: (first.get(c[0].name, len(first)), bs.index(c[1]) if c[1] else 0))
        for wave in (False, True):
            _in_processes(cfg, [_Cell(r, b, s, mults[r.name]) for r, b, s in ordered
                                if bool(METHODS[r.method].brings) == wave], vocab, k, log, "compare")
    for i, (row, b, s) in enumerate(cells if cfg.grid.jobs == 1 else []):
        where = f"[compare {i + 1}/{len(cells)}] {row.name}" + ("" if b is None else f" @ budget {b:g}") + f" seed {s}"
        log(f"{where}: starting ({time.time() - t0:.0f} s elapsed)")
        run_cell(cfg, data, domains, row, b, s, mults[row.name], vocab, k, log)
        log(f"{where}: done")
    results = collect(cfg, rows, bs, ns, domains, vocab, k)
    write_results(cfg, results)
    log(f"[compare] {len(results['cells'])} cells in {time.time() - t0:.0f} s; results in {Path(cfg.out) / 'results.md'}")
    return results


def run_cell(cfg: CompareConfig, data, domains: list[str], row: Row, b: float | None, seed: int, mult: float,
             vocab: int, k: int, log) -> None:
    """One cell: the row's pretraining at budget b and seed (what it reuses is read), then every specialization
    setting on every domain."""
    from mlx_pn.methods import specialize

    c = row_config(cfg, row, b, vocab, k, seed=seed, lr_mult=mult)
    log(f"[compare] {row.name}" + ("" if b is None else f" @ budget {b:g}") + f" seed {seed}: pretraining "
        f"{c.pretrain.steps} steps")
    METHODS[row.method].grid_pretrain(c, data, domains, log)
    for spec in dict.fromkeys(filter(None, (row_spec(row, n) for n in specs(cfg)))):
        for d in domains:
            specialize(spec_config(c, spec), data, d, log=log, domain_tokens=spec.size)


@dataclass(frozen=True)
class _Cell:
    row: Row
    budget: float | None
    seed: int
    mult: float

    @property
    def name(self) -> str:
        return f"{self.row.name}" + ("" if self.budget is None else f"-b{self.budget:g}") + f"-s{self.seed}"

    def run(self, cfg, data, domains, vocab, k, log) -> None:
        run_cell(cfg, data, domains, self.row, self.budget, self.seed, self.mult, vocab, k, log)


@dataclass(frozen=True)
class _SweepRun:
    row: Row
    mult: float

    @property
    def name(self) -> str:
        return f"sweep-{self.row.name}-x{self.mult:g}"

    def run(self, cfg, data, domains, vocab, k, log) -> None:
        METHODS[self.row.method].grid_pretrain(sweep_config(cfg, self.row, self.mult, vocab, k), data, domains, log)


def _task(args) -> str:
    """A spawned process's work: one _Cell or _SweepRun, its output (progress bars too) into OUT/logs/NAME.log."""
    import sys

    from mlx_pn.data.prepare import prepare_data

    cfg, task, vocab, k = args
    path = Path(cfg.out) / "logs" / f"{task.name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as f:
        sys.stdout = sys.stderr = f
        log = lambda *a: print(*a, flush=True)  # noqa: E731
        data = prepare_data(cfg, log=log)  # cached by the parent: read back
        task.run(cfg, data, grid_domains(cfg, data), vocab, k, log)
    return task.name


def _in_processes(cfg: CompareConfig, tasks: list, vocab: int, k: int, log, what: str) -> None:
    """Run tasks in cfg.grid.jobs spawned processes (a fresh interpreter each: MLX state is not forked), in order
    of the list as workers free up; a failing task stops the grid with its log's path."""
    import multiprocessing

    if not tasks:
        return
    t0 = time.time()
    log(f"[{what}] {len(tasks)} runs in {min(cfg.grid.jobs, len(tasks))} processes (logs: {Path(cfg.out) / 'logs'})")
    with multiprocessing.get_context("spawn").Pool(min(cfg.grid.jobs, len(tasks)), maxtasksperchild=1) as pool:
        done = pool.imap_unordered(_task, [(cfg, t, vocab, k) for t in tasks])
        for i in range(len(tasks)):
            try:
                name = next(done)
            except Exception as e:
                raise ConfigError(f"[{what}] a run failed: {e} (its log is under {Path(cfg.out) / 'logs'}; "
                                  "rerun the same command to continue)") from e
            log(f"[{what} {i + 1}/{len(tasks)}] {name} done ({time.time() - t0:.0f} s elapsed)")


def time_estimate(cfg: CompareConfig, rows: list[Row], bs: list[float], ns: list[Spec], domains: list[str], vocab: int,
                  k: int, measure=None) -> str:
    """'this grid takes about N hours on this machine': the grid's training FLOPs (every row's pretraining at its
    matched steps, its fine-tuning steps per domain and size, every seed) over the small model's training rate
    measured here (mlx_pn.costs.calibrated_rate). Evaluation, clustering and teachers' forwards are not counted."""
    from mlx_pn.costs import calibrated_rate, duration_text, measure_train_rate, train_flops_per_token
    from mlx_pn.models.build import model_args

    ns = _as_specs(ns)
    flops = 0.0
    for row in rows:
        for b in bs if METHODS[row.method].budgeted else [None]:
            c = row_config(cfg, row, b, vocab, k)
            p, f = c.pretrain, c.finetune
            if b is not None:
                flops += METHODS[row.method].flops_per_token(c, vocab, k) * p.steps * p.batch_size * p.grad_accum * p.seq_len
            per_token = train_flops_per_token(model_args(c.model, vocab), f.seq_len)
            # a setting without a step cap counted at the largest cap (or finetune.steps): early stopping decides
            caps = [n.cap if n.cap is not None else f.steps for n in ns if row_spec(row, n)]
            steps = sum(x or max(caps + [f.steps]) for x in caps)
            flops += per_token * steps * f.batch_size * f.grad_accum * f.seq_len * len(domains)
    flops *= len(_csv(getattr(cfg.grid, "seeds", "0"), "seeds", int))
    if cfg.model.frontend != "token":
        return f"[compare] this grid trains {flops:.3g} FLOPs (no time estimate for model.frontend={cfg.model.frontend})"
    rate, cached = calibrated_rate(model_args(cfg.model, vocab), cfg.pretrain.seq_len, cfg.pretrain.batch_size,
                                   cfg.out, cfg.pretrain.precision, cfg.pretrain.compile,
                                   measure=measure or measure_train_rate)
    jobs = getattr(cfg.grid, "jobs", 1)
    return (f"[compare] this grid takes {duration_text(flops / rate)} on this machine: {flops:.3g} training FLOPs at "
            f"{rate / 1e9:.2f} GFLOP/s ({'cached' if cached else 'measured now'}: {Path(cfg.out) / 'costs'})"
            + (f"; in {jobs} processes at best {duration_text(flops / rate / jobs)}, if the machine has the cores"
               if jobs > 1 else ""))


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

    rows, bs, ns = grid_rows(cfg), budgets(cfg), specs(cfg)
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
    ns = _as_specs(ns)
    legacy = all(not n.tag for n in ns)  # sizes only: the keys and the "sizes" list stay as they were (ints)
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
            for spec in ns:
                run_as, n = row_spec(row, spec), spec.label
                size = spec.size if legacy else n
                if run_as is None:
                    continue
                got = {}
                for d in domains:
                    p = specialize_dir(spec_config(c, run_as), d, run_as.size) / "results.json"
                    if not p.exists():
                        continue
                    r = json.loads(p.read_text())
                    got[d] = r
                    entry["params"] = entry["params"] or _params(p.parent / "final" / "model.safetensors")
                    cells.append({"row": row.name, "method": row.method, "budget": b, "domain": d,
                                  "domain_tokens": r["domain_train_tokens"], "size": size,
                                  "before_nll": r["before"][d]["nll"], "after_nll": r["after"][d]["nll"],
                                  "before_ppl": r["before"][d]["ppl"], "after_ppl": r["after"][d]["ppl"],
                                  "generic_after_ppl": r["after"]["generic"]["ppl"],
                                  "bpb_after": r["after"][d].get("bpb"),
                                  "finetune_steps": r["finetune_steps"], "best_step": r["best_step"],
                                  "stopped_by": r.get("stopped_by"), "select": r.get("select"),
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
    labels = [n.label for n in ns]
    main = {n.label: Spec(n.size, n.cap).label for n in ns}  # a setting's reference: the slm has no rules
    return {"domains": domains, "domain_entropy": _entropies(cfg, domains),
            "routed_rows": [r.name for r in rows if "k" in METHODS[r.method].clusterings],
            "settings": [{"label": n.label, "size": n.size, "cap": n.cap, "select": n.select} for n in ns], "sizes": [n.size for n in ns] if legacy else labels, "budgets": bs, "seeds": seeds(cfg), "rows": aggregate(summary),
            "paired": paired_differences(summary, labels, BASE_METHOD, main), "lr_sweep": sweep, "runs": summary,
            "cells": cells, "config": to_dict(cfg)}


def _entropies(cfg: CompareConfig, domains: list[str]) -> dict[str, float]:
    """Each domain's cluster-histogram entropy in nats at cluster.k (the paper's Table 10 orders domains by it);
    {} without a clustering."""
    from mlx_pn.clustering.stage import clusters_root, load_clustering, window_len

    try:
        hists = load_clustering(cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len),
                                clusters_root(cfg.data_dir), cfg.cluster.k).histograms
    except FileNotFoundError:
        return {}
    out = {}
    for d in domains:
        h = np.asarray(hists.get(d, []), dtype=np.float64)
        if h.sum() > 0:
            h = h[h > 0] / h.sum()
            out[d] = float(-(h * np.log(h)).sum())
    return out


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
            c = sweep_config(cfg, row, m, vocab, k)
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


def sweep_config(cfg: CompareConfig, row: Row, mult: float, vocab: int, k: int) -> Config:
    """One sweep run's stage config: the row at the smallest budget and pretrain.seed, lr x mult, under
    OUT/sweep/x{mult}/ (run here by lr_sweep, or in a process of its own by grid.jobs)."""
    return row_config(cfg, row, min(budgets(cfg)), vocab, k, seed=cfg.pretrain.seed, lr_mult=mult,
                      out=Path(cfg.out) / "sweep" / f"x{mult:g}")


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








