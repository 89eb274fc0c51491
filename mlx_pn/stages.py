"""The pipeline stages the recipes call: pretrain, specialize, export. Each stage is resumable and
writes its results to files under ``cfg.out``:

    OUT/data/                 tokenizer + shards (mlx_pn.data.prepare)
    OUT/pretrain/             checkpoints, metrics.jsonl, final/ (the pretrained model)
    OUT/specialize/DOMAIN/    checkpoints, metrics.jsonl, final/, results.json (ppl before/after)
    OUT/export/DOMAIN/        the mlx-lm model folder

Those are the paths of method `slm`. The other methods (cfg.method) write OUT/pretrain-METHOD/ (slm-mix:
one expert-XX/ folder per expert) and OUT/specialize-METHOD/DOMAIN/; their specialized model is a
plain Transformer too, so export and mlx-lm take it unchanged. The cluster-routed methods need the
clustering of `python -m recipes.cluster` (cluster.k clusters of pretrain.seq_len-token windows).

The baselines: llm pretrains and fine-tunes the `large` model exactly like slm; slm-nopt has no
pretraining (its specialization trains from scratch on the domain); slm-d pretrains both slm and llm,
and its specialization distills the domain-fine-tuned llm (OUT/specialize-llm/DOMAIN) into the slm;
slm-is pretrains one SLM per domain, OUT/pretrain-slm-is/DOMAIN/, on generic windows resampled to the
domain's cluster.k_importance histogram (its C_generic is 0: that pretraining is specialization cost).

Every pretraining summary.json and specialization results.json carries "cost": {flops, tokens, wall_s}
(mlx_pn.costs), so C_total(N) = C_pretrain + N * C_specialize can be read off any run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mlx_pn.config import Config, ConfigError, model_args, to_dict
from mlx_pn.costs import StageCost, forward_cost, inference_flops_per_token, projection_flops_per_token, training_cost
from mlx_pn.data.batches import ClusterGroupedBatches, PackedBatches, eval_windows
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.data.sources import DataError
from mlx_pn.io import file_sha256, write_json_atomic
from mlx_pn.train.evaluate import bits_per_byte, nll
from mlx_pn.models import mixture
from mlx_pn.models.projected import (ProjectedArgs, build_projected, load_projected, projected_config,
                                     projected_cross_entropy)
from mlx_pn.models.transformer import Transformer, build_model
from mlx_pn.train.checkpoint import load_model, save_model
from mlx_pn.train.distill import TeacherCache, TeacherCacheBatches, cached_distill_loss, live_distill_loss
from mlx_pn.train.loop import train
from mlx_pn.train.losses import cross_entropy

SMALL_FROM_SLM = ("slm-d",)  # methods whose pretrained SLM is slm's own (OUT/pretrain)


def pretrain_dir(cfg: Config, domain: str | None = None) -> Path:
    """slm: OUT/pretrain; others OUT/pretrain-METHOD; slm-is (one per domain): OUT/pretrain-slm-is/DOMAIN."""
    root = Path(cfg.out) / ("pretrain" if cfg.method == "slm" else f"pretrain-{cfg.method}")
    return root / (domain or cfg.domain) if cfg.method == "slm-is" else root


def main_rank_log(log):
    """Under mlx.launch only rank 0 talks (every rank runs the same stages)."""
    from mlx_pn.train import distributed as dist

    return log if dist.is_main() else (lambda *a, **k: None)


def as_method(cfg: Config, method: str) -> Config:
    return dataclasses.replace(cfg, method=method)


def new_model(cfg: Config, data: PreparedData, section: str = "model", seed: int = 0):
    """A freshly initialised model of cfg.<section> (model: the SLM, large: the LLM) for this tokenizer."""
    # the tokenizer: the byte model reads its pieces' bytes (the others ignore it)
    return build_model(model_args(cfg, data.tokenizer.vocab_size, section), seed=seed, tokenizer=data.tokenizer)


def _add_cost(out: Path, cost: StageCost, **extra) -> dict:
    """summary.json (written by the loop) + the stage's cost -> the summary."""
    summary = json.loads((out / "summary.json").read_text())
    summary.update(cost=cost.as_dict(), **extra)
    write_json_atomic(out / "summary.json", summary)
    return summary


def specialize_dir(cfg: Config, domain: str, domain_tokens: int = 0) -> Path:
    """OUT/specialize[-METHOD]/DOMAIN, or DOMAIN-NNNtok when fine-tuning on the first NNN domain tokens only."""
    name = f"{domain}-{domain_tokens}tok" if domain_tokens else domain
    return Path(cfg.out) / ("specialize" if cfg.method == "slm" else f"specialize-{cfg.method}") / name


def load_clusters(cfg: Config, key: str = "k"):
    """The cluster.<key> clustering a method needs (k: the routed methods; k_importance: slm-is); a
    ConfigError says how to make it."""
    from mlx_pn.clustering.stage import load_clustering

    k = getattr(cfg.cluster, key)
    try:
        return load_clustering(cfg, k)
    except FileNotFoundError as e:
        why = "resamples generic windows" if key == "k_importance" else "routes windows"
        raise ConfigError(f"method {cfg.method} {why} by cluster: {e} (same --out/--data.dir and "
                          f"--cluster.{key} {k})") from None


def _finished(out: Path, steps: int, resume: bool, log, what: str) -> dict | None:
    summary = out / "summary.json"
    if resume and summary.exists() and (out / "final" / "model.safetensors").exists():
        s = json.loads(summary.read_text())
        # "cost" is added after the loop's summary: without it the stage was killed in between (resuming
        # from the final checkpoint rewrites both)
        if (s.get("steps") == steps or s.get("planned_steps") == steps) and "cost" in s:
            log(f"[{what}] already done ({out}); delete it to retrain")
            return s
    return None


def check_vocab(model: Transformer, data: PreparedData, where: str) -> None:
    if model.args.vocab_size != data.tokenizer.vocab_size:
        raise ConfigError(
            f"{where}: the model has vocab_size={model.args.vocab_size} but the tokenizer "
            f"{data.tokenizer.folder}/spm.model has {data.tokenizer.vocab_size} ids; the model was trained with "
            f"another tokenizer. Use the same data.dir/data.vocab_size as its pretraining, or pretrain again")


def check_domain(cfg: Config, data: PreparedData, domain: str) -> None:
    if domain not in data.corpora or domain == GENERIC:
        raise ConfigError(f"domain '{domain}' is not in data.domains ({', '.join(data.domain_names())}); "
                          f"pass --domain with one of them or add it with --data.domains")


def evaluate_split(model, data: PreparedData, corpus: str, split: str, cfg: Config, max_windows: int = 0) -> dict:
    """NLL, perplexity and bits per byte of a held-out split (its first max_windows windows; 0 = all)."""
    c = data.corpora[corpus]
    windows = eval_windows(c.tokens(split), cfg.finetune.seq_len, max_windows)  # (N, L + 1)
    r = nll(model, windows, cfg.finetune.seq_len, cfg.finetune.batch_size)
    if max_windows == 0:  # the whole split: its UTF-8 size from the data manifest
        r["bpb"] = bits_per_byte(r["nll"], r["tokens"], c.bytes_utf8(split))
    else:  # the bytes the evaluated target tokens stand for
        r["bpb"] = bits_per_byte(r["nll"], r["tokens"], int(piece_bytes(data.tokenizer)[windows[:, 1:]].sum()))
    return r


_PIECE_BYTES: dict[str, np.ndarray] = {}


def piece_bytes(tokenizer) -> np.ndarray:
    """(V,) UTF-8 bytes of text each token id stands for (the byte model's reading of a piece: byte pieces 1,
    '▁' a space), control and unknown ids 0."""
    from mlx_pn.models.byte_lm import piece_symbols

    key = str(tokenizer.folder)
    if key not in _PIECE_BYTES:
        sp = tokenizer.sp
        _PIECE_BYTES[key] = np.array([0 if sp.is_control(i) or sp.is_unknown(i) else len(piece_symbols(sp, i))
                                      for i in range(tokenizer.vocab_size)])
    return _PIECE_BYTES[key]


def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert: int | None = None) -> dict:
    """Pretrain cfg.method's generic model -> pretrain_dir(cfg) (slm: OUT/pretrain/final).

    expert: slm-mix only, train just that expert (k processes can share the work)."""
    log = main_rank_log(log)
    if expert is not None and cfg.method != "slm-mix":
        raise ConfigError(f"--expert only applies to --method slm-mix (got --method {cfg.method})")
    if cfg.method == "slm-mix":
        return pretrain_mixture(cfg, data, resume, log, expert)
    if cfg.method in ("slm-pn", "slm-hn"):
        return pretrain_projected(cfg, data, resume, log)
    if cfg.method == "slm-nopt":
        log("[pretrain slm-nopt] nothing to pretrain: `python -m recipes.specialize --method slm-nopt` trains the "
            "SLM from scratch on the domain")
        return {"method": "slm-nopt", "steps": 0, "best_valid_nll": None, "cost": StageCost(0.0, 0, 0.0).as_dict()}
    if cfg.method == "slm-d":  # the student (slm's own pretraining, shared) and the teacher (llm)
        parts = {m: pretrain(as_method(cfg, m), data, resume, log) for m in ("slm", "llm")}
        cost = sum((StageCost.from_dict(p.get("cost")) for p in parts.values()), StageCost())
        return {"method": "slm-d", "steps": sum(p["steps"] for p in parts.values()),
                "best_valid_nll": parts["slm"].get("best_valid_nll"), "cost": cost.as_dict(),
                "student": str(pretrain_dir(as_method(cfg, "slm"))), "teacher": str(pretrain_dir(as_method(cfg, "llm")))}
    if cfg.method == "slm-is":
        return pretrain_importance(cfg, data, cfg.domain, resume, log)
    return pretrain_plain(cfg, data, resume, log)


def pretrain_plain(cfg: Config, data: PreparedData, resume: bool = True, log=print) -> dict:
    """slm / llm: one model (cfg.model / cfg.large) on the generic train split."""
    out, t = pretrain_dir(cfg), cfg.pretrain
    section = "large" if cfg.method == "llm" else "model"
    what = f"pretrain {cfg.method}" if cfg.method != "slm" else "pretrain"
    done = _finished(out, t.steps, resume, log, what)
    if done:
        return done
    model = new_model(cfg, data, section, seed=t.seed)
    log(f"[{what}] {getattr(cfg, section).preset} model: {model.num_params() / 1e6:.2f}M parameters "
        f"({model.num_params(embeddings=False) / 1e6:.2f}M without embeddings)")
    generic = data.corpora[GENERIC]
    batches = PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed, "data.generic (train split)")
    log(f"[{what}] {t.steps} steps x {t.batch_size * t.grad_accum * t.seq_len} tokens = "
        f"{batches.epochs(t.steps, t.grad_accum):.2f} epochs of the generic train split")
    r = train(model, t, batches, out, valid_tokens=generic.tokens("valid"), resume=resume, desc=what, log=log)
    return _add_cost(out, training_cost(model.args, r.tokens, t.seq_len, r.wall_s))


def importance_indices(cfg: Config, data: PreparedData, domain: str) -> tuple[np.ndarray, dict]:
    """Generic training windows resampled to the domain's cluster.k_importance histogram (with replacement, as
    many as the generic split has windows) -> (window indices, resampling statistics)."""
    from mlx_pn.clustering.sampling import resample, resample_stats

    clusters = load_clusters(cfg, "k_importance")
    hist = np.asarray(clusters.histograms[domain], dtype=np.float64)
    labels = clusters.labels(GENERIC, "train")
    idx = resample(labels, hist, n=len(labels), seed=cfg.pretrain.seed)
    stats = resample_stats(idx, labels, hist, clusters.k)
    return idx, {"k": clusters.k, **stats}


def pretrain_importance(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print) -> dict:
    """slm-is: an SLM pretrained from scratch for one domain on generic windows drawn with the domain's cluster
    histogram (paper-notes §4), validated on the domain's validation split (monitoring only)."""
    check_domain(cfg, data, domain)
    out, t = pretrain_dir(cfg, domain), cfg.pretrain
    done = _finished(out, t.steps, resume, log, f"pretrain slm-is {domain}")
    if done:
        return done
    idx, stats = importance_indices(cfg, data, domain)
    log(f"[pretrain slm-is] {domain}: {len(idx):,} generic windows resampled to its k={stats['k']} histogram "
        f"(unique {stats.get('unique_fraction', float('nan')):.1%}, effective sample size "
        f"{stats.get('ess', float('nan')):,.0f})")
    generic = data.corpora[GENERIC]
    batches = PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed,
                            f"data.generic resampled to {domain}", indices=idx)
    model = new_model(cfg, data, seed=t.seed)
    r = train(model, t, batches, out, valid_tokens=data.corpora[domain].tokens("valid"), resume=resume,
              desc=f"pretrain slm-is {domain}", extra_config={"mlx_pn_method": "slm-is", "domain": domain}, log=log)
    return _add_cost(out, training_cost(model.args, r.tokens, t.seq_len, r.wall_s), domain=domain,
                     importance_resampling=stats)


def projected_args(cfg: Config, k: int) -> ProjectedArgs:
    kind = "hypernet" if cfg.method == "slm-hn" else "codes"
    p = cfg.projected
    return ProjectedArgs(k=k, m=p.m, h=p.h, coefficients=kind, hypernet_hidden=p.hypernet_hidden)


def pretrain_projected(cfg: Config, data: PreparedData, resume: bool = True, log=print) -> dict:
    """slm-pn / slm-hn: one projected network, each window routed by its own cluster (E, M or the
    hypernetwork, and the basis T all trained jointly)."""
    out, t = pretrain_dir(cfg), cfg.pretrain
    done = _finished(out, t.steps, resume, log, f"pretrain {cfg.method}")
    if done:
        return done
    clusters = load_clusters(cfg)
    pargs = projected_args(cfg, clusters.k)
    model = build_projected(model_args(cfg, data.tokenizer.vocab_size), pargs, seed=t.seed)
    log(f"[pretrain {cfg.method}] {model.num_params() / 1e6:.2f}M parameters (k={pargs.k}, m={pargs.m}, "
        f"h={pargs.h}); each specialized SLM has the {cfg.model.preset} preset's size")
    generic = data.corpora[GENERIC]
    if cfg.projected.grouped:
        batches = ClusterGroupedBatches(generic.tokens("train"), t.seq_len, t.batch_size,
                                        clusters.labels(GENERIC, "train"), t.seed, "data.generic (train split)")
    else:
        batches = PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed,
                                "data.generic (train split)", labels=clusters.labels(GENERIC, "train"))
    valid, vlabels = generic.tokens("valid"), clusters.labels(GENERIC, "valid")
    if len(vlabels) < len(eval_windows(valid, t.seq_len)):
        valid, vlabels = None, None  # a split shorter than one window has no cluster label
    r = train(model, t, batches, out, valid_tokens=valid, valid_labels=vlabels, loss_fn=projected_cross_entropy,
              resume=resume, desc=f"pretrain {cfg.method}", extra_config=projected_config(model, cfg.method), log=log)
    slm_args = model_args(cfg, data.tokenizer.vocab_size)
    unit = t.seq_len * (t.batch_size if cfg.projected.grouped else 1)  # tokens sharing one materialised MLP
    extra = projection_flops_per_token(slm_args, model.pargs.h, t.seq_len, unit)
    return _add_cost(out, training_cost(slm_args, r.tokens, t.seq_len, r.wall_s, extra_per_token=extra))


def pretrain_mixture(cfg: Config, data: PreparedData, resume: bool = True, log=print,
                     expert: int | None = None) -> dict:
    """slm-mix: k independent SLMs, expert i trained only on the generic windows of cluster i.

    Steps: mixture.expert_steps per expert, by default pretrain.steps // k (all experts together cost one
    slm pretraining; the paper instead ran its mixture on 16 GPUs vs 8). Each expert's validation uses the
    generic validation windows of its own cluster."""
    root, t = pretrain_dir(cfg), cfg.pretrain
    clusters = load_clusters(cfg)
    k = clusters.k
    steps = mixture.expert_steps(t.steps, k, cfg.mixture.expert_steps)
    texp = dataclasses.replace(t, steps=steps)
    if expert is not None and not 0 <= expert < k:
        raise ConfigError(f"--expert {expert}: the clustering has k={k} clusters; pick 0..{k - 1}")
    generic = data.corpora[GENERIC]
    tokens, labels = generic.tokens("train"), clusters.labels(GENERIC, "train")
    n = max(0, (len(tokens) - 1) // t.seq_len)
    vwin = eval_windows(generic.tokens("valid"), t.seq_len)
    vlab = clusters.labels(GENERIC, "valid")[:len(vwin)]
    args = model_args(cfg, data.tokenizer.vocab_size)
    from mlx_pn.train import distributed as dist

    # Launched on several ranks (mlx.launch), the experts are shared out round-robin, each trained alone.
    for i in ([expert] if expert is not None else dist.my_share(range(k))):
        out = mixture.expert_dir(root, i)
        if _finished(out, steps, resume, log, f"pretrain slm-mix expert {i}"):
            continue
        idx = mixture.expert_windows(labels, n, i)
        if len(idx) < t.batch_size:
            raise DataError(f"slm-mix expert {i}: cluster {i} has {len(idx)} generic training windows, fewer than "
                            f"one batch of {t.batch_size}; lower cluster.k or pretrain.batch_size")
        batches = PackedBatches(tokens, t.seq_len, t.batch_size, t.seed, f"data.generic cluster {i}", indices=idx)
        log(f"[pretrain slm-mix] expert {i}/{k}: {steps} steps on {len(idx)} windows "
            f"({batches.epochs(steps, t.grad_accum):.2f} epochs of its cluster)")
        valid = vwin[vlab == i] if len(vlab) == len(vwin) and (vlab == i).any() else None
        model = new_model(cfg, data, seed=t.seed + i)
        r = train(model, texp, batches, out, valid_tokens=valid, resume=resume, desc=f"pretrain expert {i}",
                  extra_config={"mlx_pn_method": "slm-mix", "expert": i, "k": k}, log=log, group=dist.SOLO)
        _add_cost(out, training_cost(args, r.tokens, t.seq_len, r.wall_s))
    if expert is None:
        dist.barrier(dist.world()[0])  # every rank's experts are written before the summary is made
    experts = [mixture.expert_dir(root, i) for i in range(k)]
    have = [json.loads((e / "summary.json").read_text()) for e in experts
            if (e / "summary.json").exists() and (e / "final" / "model.safetensors").exists()]
    cost = sum((StageCost.from_dict(h.get("cost")) for h in have), StageCost())
    summary = {"method": "slm-mix", "k": k, "expert_steps": steps, "planned_steps": t.steps,
               "steps": steps * len(have), "experts_done": len(have), "cost": cost.as_dict(),
               "best_valid_nll": _mean([h["best_valid_nll"] for h in have])}
    if len(have) == k and dist.is_main():
        write_json_atomic(root / "summary.json", summary)
    else:
        log(f"[pretrain slm-mix] {len(have)}/{k} experts done; train the others with --expert i")
    return summary


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def domain_train_tokens(data: PreparedData, domain: str, domain_tokens: int = 0) -> np.ndarray:
    """The domain's train split, or its first domain_tokens tokens (the paper's 1M / 8M / 64M sizes)."""
    tokens = data.corpora[domain].tokens("train")
    if domain_tokens and domain_tokens + 1 > len(tokens):
        raise DataError(f"data.domains.{domain}: {domain_tokens:,} fine-tuning tokens requested but its train split "
                        f"has {len(tokens):,}; lower the size or add domain data")
    return tokens[:domain_tokens + 1] if domain_tokens else tokens


def domain_batches(cfg: Config, data: PreparedData, domain: str, t=None, domain_tokens: int = 0) -> PackedBatches:
    t = t or cfg.finetune
    size = f", first {domain_tokens:,} tokens" if domain_tokens else ""
    return PackedBatches(domain_train_tokens(data, domain, domain_tokens), t.seq_len, t.batch_size, t.seed,
                         f"data.domains.{domain} (train{size})")


def _finetune(cfg: Config, data: PreparedData, domain: str, model: Transformer, out: Path, resume: bool, log,
              t=None, batches=None, loss_fn=cross_entropy, domain_tokens: int = 0):
    """Fine-tune one SLM on the domain (early stopping on domain validation) -> TrainResult."""
    t = t or cfg.finetune
    return train(model, t, batches or domain_batches(cfg, data, domain, t, domain_tokens), out,
                 valid_tokens=data.corpora[domain].tokens("valid"), resume=resume, loss_fn=loss_fn,
                 desc=f"finetune {domain}", log=log)


def nopt_train_config(cfg: Config):
    """slm-nopt trains from scratch on the domain: the fine-tuning budget and early stopping, with the
    pretraining learning-rate schedule (a random model needs the large rate)."""
    p = cfg.pretrain
    return dataclasses.replace(cfg.finetune, lr=p.lr, min_lr=p.min_lr, warmup=p.warmup)


def start_dir(cfg: Config, domain: str) -> Path | None:
    """Where cfg.method's specialization starts from (None: slm-nopt, a random model)."""
    if cfg.method == "slm-nopt":
        return None
    if cfg.method in SMALL_FROM_SLM:
        return pretrain_dir(as_method(cfg, "slm")) / "final"
    return pretrain_dir(cfg, domain) / "final"


def _missing_start(cfg: Config, domain: str, src: Path) -> ConfigError:
    how = (f"python -m recipes.importance --domain {domain}" if cfg.method == "slm-is"
           else f"python -m recipes.pretrain --method {cfg.method}")
    return ConfigError(f"{src} does not exist: run `{how}` with the same --out first")


def teacher_dir(cfg: Config, domain: str, domain_tokens: int = 0) -> Path:
    if cfg.distill.teacher:
        return Path(cfg.distill.teacher)
    return specialize_dir(as_method(cfg, "llm"), domain, domain_tokens) / "final"


def _both(model, data, domain, cfg) -> dict:
    n = cfg.data.test_windows
    return {"generic": evaluate_split(model, data, GENERIC, "test", cfg, n),
            domain: evaluate_split(model, data, domain, "test", cfg, n)}


def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
               domain_tokens: int = 0) -> dict:
    """Fine-tune cfg.method's SLM (llm: the large model) on one domain with early stopping; measure before and
    after; results.json with the stage's cost. domain_tokens: fine-tune on only the first N train tokens."""
    log = main_rank_log(log)
    check_domain(cfg, data, domain)
    out = specialize_dir(cfg, domain, domain_tokens)
    results_path = out / "results.json"
    if resume and results_path.exists():
        log(f"[specialize] {domain}: already done ({results_path}); delete {out} to redo")
        return json.loads(results_path.read_text())
    if cfg.method in ("slm-pn", "slm-hn", "slm-mix"):
        return specialize_routed(cfg, data, domain, resume, log, domain_tokens)
    src = start_dir(cfg, domain)
    if src is not None and not (src / "model.safetensors").exists():
        raise _missing_start(cfg, domain, src)
    t0 = time.time()
    model = load_model(src) if src is not None else new_model(cfg, data, seed=cfg.finetune.seed)
    check_vocab(model, data, str(src or "a new model"))
    before = _both(model, data, domain, cfg)
    parts = {}
    if cfg.method == "slm-is":
        parts["importance_pretraining"] = StageCost.from_dict(json.loads((src.parent / "summary.json").read_text())
                                                              .get("cost"))
    if cfg.method == "slm-d":
        r, distill_parts, extra = _distill(cfg, data, domain, model, out, resume, log, domain_tokens)
        parts.update(distill_parts)
    else:
        t = nopt_train_config(cfg) if cfg.method == "slm-nopt" else cfg.finetune
        r, extra = _finetune(cfg, data, domain, model, out, resume, log, t=t, domain_tokens=domain_tokens), {}
    parts["finetune"] = training_cost(model.args, r.tokens, cfg.finetune.seq_len, r.wall_s)
    after = _both(model, data, domain, cfg)
    results = {
        "domain": domain, "method": cfg.method, "pretrained_from": str(src) if src else None,
        "domain_train_tokens": len(domain_train_tokens(data, domain, domain_tokens)) - 1,
        "before": before, "after": after, "finetune_steps": r.steps, "best_step": r.best_step,
        "stopped_early": r.stopped_early, "wall_s": time.time() - t0, **extra,
        **_cost_fields(parts, model.args, cfg), "config": to_dict(cfg),
    }
    write_json_atomic(results_path, results)
    return results


def _cost_fields(parts: dict[str, StageCost], args, cfg: Config) -> dict:
    total = sum(parts.values(), StageCost())
    return {"cost": total.as_dict(), "cost_parts": {k: v.as_dict() for k, v in parts.items()},
            "inference_flops_per_token": inference_flops_per_token(args, cfg.finetune.seq_len)}


def _distill(cfg: Config, data: PreparedData, domain: str, student, out: Path, resume: bool, log,
             domain_tokens: int = 0):
    """slm-d: train the pretrained SLM on the domain against the fine-tuned teacher -> (TrainResult, cost
    parts, extra result fields)."""
    tdir, dc, t = teacher_dir(cfg, domain, domain_tokens), cfg.distill, cfg.finetune
    if not (tdir / "model.safetensors").exists():
        raise ConfigError(f"slm-d needs the domain-fine-tuned teacher {tdir}: run `python -m recipes.specialize "
                          f"--method llm --domain {domain}` with the same --out first (or set --distill.teacher)")
    teacher = load_model(tdir)
    check_vocab(teacher, data, str(tdir))
    k = min(dc.top_k, teacher.args.vocab_size)
    base = domain_batches(cfg, data, domain, domain_tokens=domain_tokens)
    parts = {}
    teacher_results = tdir.parent / "results.json"
    if teacher_results.exists() and not dc.teacher:
        parts["teacher_finetune"] = StageCost.from_dict(json.loads(teacher_results.read_text()).get("cost"))
    visits = t.steps * t.batch_size * t.grad_accum  # windows fine-tuning may read (fewer with early stopping)
    mode = dc.cache if dc.cache != "auto" else ("disk" if visits >= base.n_windows else "live")
    if mode == "disk":
        tokens = domain_train_tokens(data, domain, domain_tokens)
        cache = TeacherCache(out / "teacher", base.n_windows, t.seq_len, k)
        key = {"teacher": file_sha256(tdir / "model.safetensors"), "k": k, "temperature": dc.temperature,
               "seq_len": t.seq_len, "windows": base.n_windows}
        secs = cache.build(teacher, tokens, dc.temperature, key, t.batch_size, log)
        parts["teacher_forward"] = forward_cost(teacher.args, base.n_windows * t.seq_len, t.seq_len, secs)
        r = _finetune(cfg, data, domain, student, out, resume, log, batches=TeacherCacheBatches(base, cache),
                      loss_fn=cached_distill_loss(dc.alpha, dc.temperature))
    else:
        r = _finetune(cfg, data, domain, student, out, resume, log, batches=base,
                      loss_fn=live_distill_loss(teacher, k, dc.alpha, dc.temperature))
        parts["teacher_forward"] = forward_cost(teacher.args, r.tokens, t.seq_len, None)  # inside the steps' time
    extra = {"teacher": str(tdir), "distill": {"mode": mode, "top_k": k, "alpha": dc.alpha,
                                               "temperature": dc.temperature,
                                               "teacher_cache_s": parts["teacher_forward"].wall_s}}
    return r, parts, extra


def resolve_select(cfg: Config) -> str:
    if cfg.select == "auto":
        return "histogram" if cfg.method == "slm-hn" else "most-frequent"
    return cfg.select


def specialize_routed(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
                      domain_tokens: int = 0) -> dict:
    """slm-pn / slm-hn / slm-mix: pick the starting SLM (cfg.select), then fine-tune it like an slm.

    most-frequent: the domain's top cluster; histogram: project with the domain's whole histogram (pn, hn);
    best-loss: the cluster whose SLM has the lowest domain-validation loss before fine-tuning; all:
    fine-tune every cluster's SLM (under candidates/), keep the best validation (k times the cost)."""
    clusters = load_clusters(cfg)
    hist = np.asarray(clusters.histograms[domain], dtype=np.float64)
    select, root = resolve_select(cfg), pretrain_dir(cfg)
    if cfg.method == "slm-mix":
        def make(i):
            try:
                return mixture.load_expert(root, int(i))
            except FileNotFoundError as e:
                raise ConfigError(str(e)) from None
    else:
        pm = load_projected(root / "final")
        make = pm.specialize  # cluster id or histogram -> Transformer
    out, t, corpus = specialize_dir(cfg, domain, domain_tokens), cfg.finetune, data.corpora[domain]
    t0 = time.time()
    valid_nll = {}
    if select == "histogram":
        choice = "histogram"
    elif select == "most-frequent":
        choice = int(hist.argmax())
    else:
        for i in range(clusters.k):
            if select == "best-loss":
                m = make(i)
                valid_nll[i] = nll(m, corpus.tokens("valid"), t.seq_len, t.batch_size,
                                   t.eval_batches * t.batch_size)["nll"]
            else:  # all: fine-tune each candidate, compare on domain validation
                r = _finetune(cfg, data, domain, make(i), out / "candidates" / f"expert-{i:02d}", resume, log,
                              domain_tokens=domain_tokens)
                valid_nll[i] = r.best_valid_nll
        choice = min(valid_nll, key=lambda i: valid_nll[i])
        log(f"[specialize {cfg.method}] {select}: cluster {choice} (domain valid nll "
            + ", ".join(f"{i}: {v:.3f}" for i, v in valid_nll.items()) + ")")
    model = make(hist if choice == "histogram" else choice)
    check_vocab(model, data, str(root))
    before = _both(model, data, domain, cfg)
    if select == "all":
        model = load_model(out / "candidates" / f"expert-{choice:02d}" / "final")
        save_model(out / "final", model)
        r = json.loads((out / "candidates" / f"expert-{choice:02d}" / "summary.json").read_text())
    else:
        r = _finetune(cfg, data, domain, model, out, resume, log, domain_tokens=domain_tokens).__dict__
    after = _both(model, data, domain, cfg)
    parts = {"finetune": training_cost(model.args, r["tokens"], t.seq_len, r["wall_s"])}
    if select == "best-loss":
        parts["selection"] = forward_cost(model.args, clusters.k * t.eval_batches * t.batch_size * t.seq_len,
                                          t.seq_len)
    elif select == "all":
        cand = [json.loads((out / "candidates" / f"expert-{i:02d}" / "summary.json").read_text())
                for i in range(clusters.k)]
        parts["finetune"] = sum((training_cost(model.args, c["tokens"], t.seq_len, c["wall_s"]) for c in cand),
                                StageCost())
    results = {
        "domain": domain, "method": cfg.method, "select": select, "selected_cluster": choice,
        "k": clusters.k, "domain_histogram": hist.tolist(), "top_cluster_share": float(hist.max()),
        "candidates_valid_nll": {str(i): v for i, v in valid_nll.items()}, "pretrained_from": str(root),
        "domain_train_tokens": len(domain_train_tokens(data, domain, domain_tokens)) - 1,
        "before": before, "after": after, "finetune_steps": r["steps"], "best_step": r["best_step"],
        "stopped_early": r["stopped_early"], "wall_s": time.time() - t0, **_cost_fields(parts, model.args, cfg),
        "config": to_dict(cfg),
    }
    write_json_atomic(out / "results.json", results)
    return results


def specialized_model_dir(cfg: Config, domain: str, domain_tokens: int = 0) -> Path:
    return specialize_dir(cfg, domain, domain_tokens) / "final"
