"""The cluster-routed methods: every generic training window is routed by its cluster (cluster.k of
`mlx-pn cluster`), and specialization picks or makes one plain SLM from the domain's clusters.

slm-pn: a projected network (shared attention/embeddings, MLP W(l, i) = sum_r (E_i M_l)_r T_l[r]);
slm-hn: the same basis with a hypernetwork (cluster histogram -> coefficients);
slm-mix: k independent SLMs, expert i trained on cluster i's windows only (OUT/pretrain-slm-mix/expert-XX/).

Selection (cfg.select): most-frequent (the domain's top cluster) | best-loss (the cluster whose SLM has the
lowest domain-validation loss before fine-tuning) | all (fine-tune every cluster's SLM under candidates/,
keep the best validation: k times the cost) | histogram (pn/hn: project with the domain's whole histogram).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from mlx_pn.commands import recipe_command
from mlx_pn.config import Config, ConfigError, to_dict
from mlx_pn.costs import StageCost, projection_flops_per_token, train_flops_per_token, training_cost
from mlx_pn.data.batches import ClusterGroupedBatches, PackedBatches, eval_windows
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.data.sources import DataError
from mlx_pn.methods.finetune import check_vocab, cost_fields, domain_train_tokens, finetune_costs, measure, run_fields
from mlx_pn.methods.importance import check_window
from mlx_pn.methods.layout import method_clustering, pretrain_dir, specialize_dir
from mlx_pn.methods.method import Method
from mlx_pn.methods.results import Selection, SpecializeResults
from mlx_pn.methods.selection import SELECTORS, Context
from mlx_pn.methods.slm import missing_start, new_model
from mlx_pn.models.build import load_model, model_args
from mlx_pn.train import distributed as dist
from mlx_pn.train.stage import Stage, parts_done, run_stage, write_group_summary


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def resolve_select(cfg: Config, default: str) -> str:
    return default if cfg.select == "auto" else cfg.select


def specialize_routed(cfg: Config, data: PreparedData, domain: str, load, select: str, resume: bool, log,
                      domain_tokens: int = 0) -> SpecializeResults:
    """Pick the starting SLM (`select`: a SELECTORS rule), then fine-tune it. load() -> make(cluster id |
    histogram) -> Transformer, called once the clustering is known to be there."""
    clusters = method_clustering(cfg)
    rule, root, t = SELECTORS[select], pretrain_dir(cfg), cfg.finetune
    c = Context(cfg, data, domain, load(), np.asarray(clusters.histograms[domain], dtype=np.float64), clusters.k,
                specialize_dir(cfg, domain, domain_tokens), resume, log, domain_tokens)
    t0 = time.time()
    pick = rule.pick(c)
    model = c.make(pick.start)
    check_vocab(model, data, str(root))
    before = measure(model, data, domain, cfg, log, "before fine-tuning")
    model, r = rule.tune(c, model, pick)
    after = measure(model, data, domain, cfg, log, "after fine-tuning")
    parts, every = {}, {}
    parts["finetune"], every["finetune"] = finetune_costs(model.args, r, t.seq_len)
    more_parts, more_every = rule.costs(c, model.args)
    parts.update(more_parts)
    every.update(more_every)
    chosen = Selection(select=select, selected_cluster=pick.choice, k=clusters.k, domain_histogram=c.hist.tolist(),
                       top_cluster_share=float(c.hist.max()),
                       candidates_valid_nll={str(i): v for i, v in pick.valid_nll.items()})
    return SpecializeResults(
        domain=domain, method=cfg.method, pretrained_from=str(root),
        domain_train_tokens=len(domain_train_tokens(data, domain, domain_tokens)) - 1,
        before=before, after=after, **run_fields(r, t), wall_s=time.time() - t0,
        **cost_fields(parts, model.args, cfg, every), config=to_dict(cfg), selection=chosen)


def routed_check(cfg: Config) -> None:
    check_window(cfg)


# --- slm-pn / slm-hn: one projected network --------------------------------------------------------------


def projected_args(cfg: Config, k: int, coefficients: str):
    from mlx_pn.models.projected import ProjectedArgs

    p = cfg.projected
    return ProjectedArgs(k=k, m=p.m, h=p.h, coefficients=coefficients, hypernet_hidden=p.hypernet_hidden,
                         code_shared=p.code_shared, match_lr=p.match_lr, coef_lr=p.coef_lr)


def projected_check(cfg: Config) -> None:
    routed_check(cfg)
    stlm = [k for k in ("share_ffn", "share_attn_out") if getattr(cfg.model, k)] + (
        ["frontend=byte"] if cfg.model.frontend == "byte" else [])
    if stlm:
        raise ConfigError(f"model.{', model.'.join(stlm)}: method {cfg.method} projects every layer's own MLP from a "
                          f"token-level trunk; use these STLM options with slm, slm-mix, slm-is, slm-nopt or llm")


def projected_flops(cfg: Config, vocab: int, k: int) -> float:
    """The SLM's training FLOPs plus materialising one expert's MLP per routed unit (a window or a batch)."""
    args, L = model_args(cfg.model, vocab), cfg.pretrain.seq_len
    unit = L * (cfg.pretrain.batch_size if cfg.projected.grouped else 1)
    return train_flops_per_token(args, L) + projection_flops_per_token(args, cfg.projected.h or k, L, unit)


def projected_method(name: str, coefficients: str, default_select: str) -> Method:
    def stage(cfg: Config, data: PreparedData) -> Stage:
        """One projected network, each window routed by its own cluster (E, M or the hypernetwork, and the
        basis T all trained jointly)."""
        from mlx_pn.models.projected import build_projected, expert_cosine, projected_config

        t, generic = cfg.pretrain, data.corpora[GENERIC]
        clusters = method_clustering(cfg)
        pargs = projected_args(cfg, clusters.k, coefficients)
        slm_args = model_args(cfg.model, data.tokenizer.vocab_size)
        labels = clusters.labels(GENERIC, "train")

        def batches():
            if cfg.projected.grouped:
                return ClusterGroupedBatches(generic.tokens("train"), t.seq_len, t.batch_size, labels, t.seed,
                                             "data.generic (train split)")
            return PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed,
                                 "data.generic (train split)", labels=labels)

        def valid():
            valid, vlabels = generic.tokens("valid"), clusters.labels(GENERIC, "valid")
            if len(vlabels) < len(eval_windows(valid, t.seq_len)):
                return None, None  # a split shorter than one window has no cluster label
            return valid, vlabels

        def before(model, batches, log) -> dict:
            cos_init = expert_cosine(model)
            log(f"[pretrain {cfg.method}] {model.num_params() / 1e6:.2f}M parameters (k={pargs.k}, m={pargs.m}, "
                f"h={pargs.h}); each specialized SLM has the {cfg.model.preset} preset's size; experts' cosine at "
                f"init {cos_init:.3f} (projected.code_shared={pargs.code_shared})")
            return {"expert_cosine_init": cos_init}

        def cost(model, r):
            unit = t.seq_len * (t.batch_size if cfg.projected.grouped else 1)  # tokens sharing one materialised MLP
            extra = projection_flops_per_token(slm_args, model.pargs.h, t.seq_len, unit)
            return training_cost(slm_args, r.tokens, t.seq_len, r.wall_s, extra_per_token=extra)

        # after: how far the experts diverged (mean pairwise cosine of the clusters' coefficients; init: ~rho)
        return Stage(pretrain_dir(cfg), f"pretrain {cfg.method}", t,
                     model=lambda: build_projected(slm_args, pargs, seed=t.seed), batches=batches, valid=valid,
                     cost=cost, before=before, after=lambda model: {"expert_cosine": expert_cosine(model)},
                     extra_config=lambda model: projected_config(model, cfg.method))

    def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert=None) -> dict:
        return run_stage(stage(cfg, data), resume, log)

    def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
                   domain_tokens: int = 0) -> SpecializeResults:
        from mlx_pn.models.projected import load_projected

        def load():
            src = pretrain_dir(cfg) / "final"
            if not (src / "model.safetensors").exists():
                raise missing_start(src, f"{recipe_command('pretrain')} --method {cfg.method}")
            return load_projected(src).specialize  # cluster id or histogram -> Transformer

        return specialize_routed(cfg, data, domain, load, resolve_select(cfg, default_select), resume, log,
                                 domain_tokens)

    return Method(name, pretrain=pretrain, specialize=specialize, check=projected_check,
                  flops_per_token=projected_flops, clusterings=("k",), select=default_select,
                  start=lambda cfg, domain: (pretrain_dir(cfg) / "final", "model"))


SLM_PN = projected_method("slm-pn", "codes", "most-frequent")
SLM_HN = projected_method("slm-hn", "hypernet", "histogram")


# --- slm-mix: the hard mixture ---------------------------------------------------------------------------


def expert_dir(root: str | Path, i: int) -> Path:
    return Path(root) / f"expert-{i:02d}"


def expert_windows(labels: np.ndarray, n_windows: int, i: int) -> np.ndarray:
    """Indices of the windows (of a PackedBatches stream with n_windows windows) in cluster i."""
    return np.flatnonzero(np.asarray(labels)[:n_windows] == i)


def expert_steps(total_steps: int, k: int, per_expert: int = 0) -> int:
    """Per-expert steps: `per_expert` if set, else an even split of the SLM budget (same total cost)."""
    return per_expert or max(1, total_steps // k)


def expert_plan(cfg: Config, k: int) -> tuple[int, int]:
    """(steps, batch_size) of each of k experts under mixture.accounting: paper = the slm's steps at 1/k of its
    batch (the paper's experts, trained in parallel); split-steps = pretrain.steps // k at the full batch. Both
    spend the slm's tokens (hence FLOPs) over the k experts; mixture.expert_steps overrides the steps.

    paper with batch_size not a multiple of k: each expert's batch is batch_size // k (at least 1) and its steps
    grow to keep batch_size / k rows per slm step, rounded to a whole step (batch 8, k = 16: 1 row, half the
    steps; batch 8, k = 3: 2 rows, round(4/3 x steps)): the tokens match the slm's to within one step per expert."""
    t, mix = cfg.pretrain, cfg.mixture
    if mix.accounting == "split-steps":
        return expert_steps(t.steps, k, mix.expert_steps), t.batch_size
    batch = max(1, t.batch_size // k)
    return mix.expert_steps or max(1, round(t.steps * t.batch_size / (k * batch))), batch


def load_expert(root: str | Path, i: int, method: str):
    """Expert i's final weights; a ConfigError naming the command that trains it."""
    folder = expert_dir(root, i) / "final"
    if not (folder / "model.safetensors").exists():
        raise ConfigError(f"{folder} does not exist: train it with `{recipe_command('pretrain')} --method {method} "
                          f"--expert {i}` (or without --expert to train all experts)")
    return load_model(folder)


def mixture_check(cfg: Config) -> None:
    routed_check(cfg)
    if cfg.select == "histogram":
        raise ConfigError(f"select=histogram needs a projected model (slm-pn or slm-hn); {cfg.method} experts are "
                          "separate models: use --select most-frequent, best-loss or all")


def mixture_expert_stage(cfg: Config, data: PreparedData, i: int, k: int, texp, args, labels, vwin, vlab) -> Stage:
    """Expert i of slm-mix: an SLM on the generic windows of cluster i, validated on that cluster's validation
    windows; one process trains it alone (dist.SOLO: under mlx.launch the ranks share the experts out)."""
    t, tokens = cfg.pretrain, data.corpora[GENERIC].tokens("train")
    n = max(0, (len(tokens) - 1) // t.seq_len)
    steps, batch = texp.steps, texp.batch_size

    def batches():
        idx = expert_windows(labels, n, i)
        if len(idx) < batch:
            raise DataError(f"{cfg.method} expert {i}: cluster {i} has {len(idx)} generic training windows, fewer "
                            f"than one batch of {batch}; lower cluster.k or pretrain.batch_size")
        return PackedBatches(tokens, t.seq_len, batch, t.seed, f"data.generic cluster {i}", indices=idx)

    def before(model, batches, log) -> dict:
        log(f"[pretrain {cfg.method}] expert {i}/{k}: {steps} steps x batch {batch} on {len(batches.indices)} "
            f"windows ({batches.epochs(steps, t.grad_accum):.2f} epochs of its cluster)")
        return {}

    valid = vwin[vlab == i] if len(vlab) == len(vwin) and (vlab == i).any() else None
    return Stage(expert_dir(pretrain_dir(cfg), i), f"pretrain expert {i}", texp,
                 model=lambda: new_model(cfg, data, seed=t.seed + i), batches=batches, valid=lambda: (valid, None),
                 before=before, extra_config=lambda model: {"mlx_pn_method": cfg.method, "expert": i, "k": k},
                 cost=lambda model, r: training_cost(args, r.tokens, t.seq_len, r.wall_s), group=dist.SOLO)


def mixture_pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print,
                     expert: int | None = None) -> dict:
    """k independent SLMs, expert i trained only on the generic windows of cluster i.

    Steps and batch per expert: expert_plan (mixture.accounting; all experts together cost one slm
    pretraining). Each expert's validation uses the generic validation windows of its own cluster (as many
    windows as the slm's validation: eval_batches x k at the smaller batch). expert: train just that expert
    (k processes can share the work); under mlx.launch the ranks share the experts out round-robin."""
    root, t = pretrain_dir(cfg), cfg.pretrain
    clusters = method_clustering(cfg)
    k = clusters.k
    steps, batch = expert_plan(cfg, k)
    texp = dataclasses.replace(t, steps=steps, batch_size=batch,
                               eval_batches=t.eval_batches * t.batch_size // batch)
    if expert is not None and not 0 <= expert < k:
        raise ConfigError(f"--expert {expert}: the clustering has k={k} clusters; pick 0..{k - 1}")
    generic = data.corpora[GENERIC]
    labels = clusters.labels(GENERIC, "train")
    vwin = eval_windows(generic.tokens("valid"), t.seq_len)
    vlab = clusters.labels(GENERIC, "valid")[:len(vwin)]
    args = model_args(cfg.model, data.tokenizer.vocab_size)
    for i in ([expert] if expert is not None else dist.my_share(range(k))):
        run_stage(mixture_expert_stage(cfg, data, i, k, texp, args, labels, vwin, vlab), resume, log)
    if expert is None:
        dist.barrier(dist.world()[0])  # every rank's experts are written before the summary is made
    have = parts_done([expert_dir(root, i) for i in range(k)])
    cost = sum((StageCost.from_dict(h.get("cost")) for h in have), StageCost())
    summary = {"method": cfg.method, "k": k, "accounting": cfg.mixture.accounting, "expert_steps": steps,
               "expert_batch_size": batch, "planned_steps": t.steps,
               "steps": steps * len(have), "experts_done": len(have), "cost": cost.as_dict(),
               "best_valid_nll": _mean([h["best_valid_nll"] for h in have])}
    if len(have) < k:
        log(f"[pretrain {cfg.method}] {len(have)}/{k} experts done; train the others with --expert i")
    return write_group_summary(root, summary, complete=len(have) == k)


def mixture_specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
                       domain_tokens: int = 0) -> SpecializeResults:
    root = pretrain_dir(cfg)
    return specialize_routed(cfg, data, domain, lambda: (lambda i: load_expert(root, int(i), cfg.method)),
                             resolve_select(cfg, "most-frequent"), resume, log, domain_tokens)


SLM_MIX = Method("slm-mix", pretrain=mixture_pretrain, specialize=mixture_specialize, check=mixture_check,
                 clusterings=("k",), experts=True, select="most-frequent",
                 start=lambda cfg, domain: (pretrain_dir(cfg) / "expert-00" / "final", "model"))
