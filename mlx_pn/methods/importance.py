"""slm-is: importance-sampled pretraining (paper-notes §4). Once a domain is known, the generic training
windows are resampled (with replacement) to the domain's cluster.k_importance histogram and an SLM is
pretrained from scratch on them -> OUT/pretrain-slm-is/DOMAIN; specialization fine-tunes it. Nothing is
shared between domains, so that pretraining is counted as specialization cost (its C_generic is 0)."""

from __future__ import annotations

import numpy as np

from mlx_pn.commands import recipe_command
from mlx_pn.config import Config, ConfigError
from mlx_pn.costs import StageCost, training_cost
from mlx_pn.data.batches import PackedBatches
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.methods.finetune import check_domain, specialize_model
from mlx_pn.methods.layout import method_clustering, pretrain_dir, read_summary
from mlx_pn.methods.method import Method
from mlx_pn.methods.results import SpecializeResults
from mlx_pn.methods.slm import load_start, missing_start, new_model
from mlx_pn.train.stage import Stage, run_stage


def check_window(cfg: Config) -> None:
    """Methods that label every training window with a cluster need the clustering's windows to be them."""
    if cfg.cluster.window not in (0, cfg.pretrain.seq_len):
        raise ConfigError(f"method {cfg.method} routes each training window by its cluster, so cluster.window must "
                          f"be 0 or pretrain.seq_len={cfg.pretrain.seq_len}, got {cfg.cluster.window}")


def importance_indices(cfg: Config, data: PreparedData, domain: str) -> tuple[np.ndarray, dict]:
    """Generic training windows resampled to the domain's cluster.k_importance histogram (with replacement, as
    many as the generic split has windows) -> (window indices, resampling statistics)."""
    from mlx_pn.clustering.sampling import resample, resample_stats

    clusters = method_clustering(cfg, "k_importance")
    hist = np.asarray(clusters.histograms[domain], dtype=np.float64)
    labels = clusters.labels(GENERIC, "train")
    idx = resample(labels, hist, n=len(labels), seed=cfg.pretrain.seed)
    stats = resample_stats(idx, labels, hist, clusters.k)
    return idx, {"k": clusters.k, **stats}


MEMORISE_PASSES = 8  # draws per effective window above which the resampled pool is memorised


def importance_stage(cfg: Config, data: PreparedData, domain: str) -> Stage:
    """An SLM pretrained from scratch for one domain on generic windows drawn with the domain's cluster
    histogram, validated on the domain's validation split (monitoring only)."""
    t, generic = cfg.pretrain, data.corpora[GENERIC]
    idx, stats = importance_indices(cfg, data, domain)

    def before(model, batches, log) -> dict:
        log(f"[pretrain {cfg.method}] {domain}: {len(idx):,} generic windows resampled to its k={stats['k']} "
            f"histogram (unique {stats.get('unique_fraction', float('nan')):.1%}, effective sample size "
            f"{stats.get('ess', float('nan')):,.0f})")
        passes = t.steps * t.batch_size * t.grad_accum / max(stats.get("ess") or 0.0, 1.0)
        if passes > MEMORISE_PASSES:
            # measured (docs/comparison.md, compare-d128): 34-108 passes over an effective 89-382 windows memorised
            # them (train loss 0.04-0.96, domain test perplexity > 1,600 before fine-tuning)
            log(f"[pretrain {cfg.method}] warning: {domain}'s resampled pool is small for this pretraining: "
                f"{t.steps:,} steps x {t.batch_size * t.grad_accum} windows draw {passes:.0f} times its effective "
                f"sample, so the model will memorise it; use a larger data.generic (the paper resamples from c4), "
                f"a larger cluster.k_importance pool, or fewer pretrain.steps")
        return {"domain": domain, "importance_resampling": stats}

    return Stage(
        pretrain_dir(cfg, domain), f"pretrain {cfg.method} {domain}", t, model=lambda: new_model(cfg, data, seed=t.seed),
        batches=lambda: PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed,
                                      f"data.generic resampled to {domain}", indices=idx),
        valid=lambda: (data.corpora[domain].tokens("valid"), None), before=before,
        extra_config=lambda model: {"mlx_pn_method": cfg.method, "domain": domain},
        cost=lambda model, r: training_cost(model.args, r.tokens, t.seq_len, r.wall_s))


def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert=None,
             domain: str | None = None) -> dict:
    """slm-is's pretraining for one domain (default cfg.domain) -> OUT/pretrain-slm-is/DOMAIN."""
    domain = domain or cfg.domain
    check_domain(cfg, data, domain)
    return run_stage(importance_stage(cfg, data, domain), resume, log)


def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
               domain_tokens: int = 0) -> SpecializeResults:
    src = pretrain_dir(cfg, domain) / "final"
    if not (src / "model.safetensors").exists():
        raise missing_start(src, f"{recipe_command('importance')} --domain {domain}")
    parts = {"importance_pretraining": StageCost.from_dict((read_summary(src.parent) or {}).get("cost"))}
    model, sha = load_start(src, cfg)
    return specialize_model(cfg, data, domain, model, src, resume, log, domain_tokens, parts=parts, src_sha=sha)


def _grid_pretrain(cfg: Config, data, domains: list[str], log) -> None:
    for d in domains:  # the budget is spent once per domain
        pretrain(cfg, data, log=log, domain=d)


SLM_IS = Method("slm-is", pretrain=pretrain, specialize=specialize, check=check_window,
                start=lambda cfg, domain: (pretrain_dir(cfg, domain) / "final", "model"), own_pretraining=False,
                pretrain_summary=lambda cfg: None, grid_pretrain=_grid_pretrain, clusterings=("k_importance",))
