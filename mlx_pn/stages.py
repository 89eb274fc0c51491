"""The pipeline stages the recipes call: pretrain, specialize, export. Each stage is resumable and
writes its results to files under ``cfg.out``:

    OUT/data/                 tokenizer + shards (mlx_pn.data.prepare)
    OUT/pretrain/             checkpoints, metrics.jsonl, final/ (the pretrained model)
    OUT/specialize/DOMAIN/    checkpoints, metrics.jsonl, final/, results.json (ppl before/after)
    OUT/export/DOMAIN/        the mlx-lm model folder
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlx_pn.config import Config, ConfigError, model_args, to_dict
from mlx_pn.data.batches import PackedBatches
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.io import write_json_atomic
from mlx_pn.evaluate import bits_per_byte, nll
from mlx_pn.models.transformer import Transformer, build_model
from mlx_pn.train.checkpoint import load_model
from mlx_pn.train.loop import train


def pretrain_dir(cfg: Config) -> Path:
    return Path(cfg.out) / "pretrain"


def specialize_dir(cfg: Config, domain: str) -> Path:
    return Path(cfg.out) / "specialize" / domain


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
    c = data.corpora[corpus]
    r = nll(model, c.tokens(split), cfg.finetune.seq_len, cfg.finetune.batch_size, max_windows)
    # bits per byte is exact only for the whole split (the window cut drops the tail)
    full = max_windows == 0
    r["bpb"] = bits_per_byte(r["nll"], r["tokens"], c.bytes_utf8(split)) if full else None
    return r


def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print) -> dict:
    """Pretrain the small model on the generic corpus -> OUT/pretrain/final."""
    out = pretrain_dir(cfg)
    t = cfg.pretrain
    summary = out / "summary.json"
    if resume and summary.exists() and (out / "final" / "model.safetensors").exists():
        s = json.loads(summary.read_text())
        if s.get("steps") == t.steps:
            log(f"[pretrain] already done ({out}); delete it to retrain")
            return s
    model = build_model(model_args(cfg, data.tokenizer.vocab_size), seed=t.seed)
    log(f"[pretrain] {cfg.model.preset} model: {model.num_params() / 1e6:.2f}M parameters "
        f"({model.num_params(embeddings=False) / 1e6:.2f}M without embeddings)")
    generic = data.corpora[GENERIC]
    batches = PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed, "data.generic (train split)")
    log(f"[pretrain] {t.steps} steps x {t.batch_size * t.grad_accum * t.seq_len} tokens = "
        f"{batches.epochs(t.steps, t.grad_accum):.2f} epochs of the generic train split")
    r = train(model, t, batches, out, valid_tokens=generic.tokens("valid"), resume=resume, desc="pretrain", log=log)
    return json.loads(summary.read_text()) if summary.exists() else r.__dict__


def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print) -> dict:
    """Fine-tune the pretrained model on one domain with early stopping; measure before and after."""
    check_domain(cfg, data, domain)
    src = pretrain_dir(cfg) / "final"
    if not (src / "model.safetensors").exists():
        raise ConfigError(f"{src} does not exist: run `python -m recipes.pretrain` with the same --out first")
    out = specialize_dir(cfg, domain)
    results_path = out / "results.json"
    if resume and results_path.exists():
        log(f"[specialize] {domain}: already done ({results_path}); delete {out} to redo")
        return json.loads(results_path.read_text())
    model = load_model(src)
    check_vocab(model, data, str(src))
    t = cfg.finetune
    corpus = data.corpora[domain]
    t0 = time.time()
    before = {"generic": evaluate_split(model, data, GENERIC, "test", cfg),
              domain: evaluate_split(model, data, domain, "test", cfg)}
    batches = PackedBatches(corpus.tokens("train"), t.seq_len, t.batch_size, t.seed, f"data.domains.{domain} (train)")
    r = train(model, t, batches, out, valid_tokens=corpus.tokens("valid"), resume=resume,
              desc=f"finetune {domain}", log=log)
    after = {"generic": evaluate_split(model, data, GENERIC, "test", cfg),
             domain: evaluate_split(model, data, domain, "test", cfg)}
    results = {
        "domain": domain, "method": "slm", "pretrained_from": str(src),
        "domain_train_tokens": corpus.manifest["splits"]["train"]["tokens"],
        "before": before, "after": after, "finetune_steps": r.steps, "best_step": r.best_step,
        "stopped_early": r.stopped_early, "wall_s": time.time() - t0, "config": to_dict(cfg),
    }
    write_json_atomic(results_path, results)
    return results


def specialized_model_dir(cfg: Config, domain: str) -> Path:
    return specialize_dir(cfg, domain) / "final"
