"""The specialization every method shares: fine-tune one SLM on a domain with early stopping, measure the
domain's and the generic test split before and after, write results.json with the stage's cost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlx_pn.config import Config, ConfigError, TrainConfig, to_dict
from mlx_pn.costs import StageCost, inference_flops_per_token, training_cost
from mlx_pn.data.batches import PackedBatches, eval_windows
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.data.sources import DataError
from mlx_pn.fingerprint import weights_sha256
from mlx_pn.methods.before import measure_before
from mlx_pn.methods.layout import specialize_dir
from mlx_pn.methods.results import SpecializeResults
from mlx_pn.train import distributed as dist
from mlx_pn.train import loop
from mlx_pn.train.evaluate import bits_per_byte, nll
from mlx_pn.train.loop import RunOptions
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.stage import write_summary


def check_vocab(model, data: PreparedData, where: str) -> None:
    if model.args.vocab_size != data.tokenizer.vocab_size:
        raise ConfigError(
            f"{where}: the model has vocab_size={model.args.vocab_size} but the tokenizer "
            f"{data.tokenizer.folder}/spm.model has {data.tokenizer.vocab_size} ids; the model was trained with "
            f"another tokenizer. Use the same data.dir/data.vocab_size as its pretraining, or pretrain again")


def check_domain(cfg: Config, data: PreparedData, domain: str) -> None:
    if domain not in data.corpora or domain == GENERIC:
        names = ", ".join(cfg.data.domains) or "none"
        raise ConfigError(f"domain '{domain}' is not in data.domains (the config's domains: {names}); pass --domain "
                          f"with one of them, or add it with --data.add_domains {domain}=SOURCES")


def evaluate_split(model, data: PreparedData, corpus: str, split: str, cfg: Config, max_windows: int = 0,
                   log=None) -> dict:
    """NLL, perplexity and bits per byte of a held-out split (its first max_windows windows; 0 = all); with
    `log`, a progress bar while it runs and one line when done."""
    c = data.corpora[corpus]
    t0 = time.time()
    windows = eval_windows(c.tokens(split), cfg.finetune.seq_len, max_windows)  # (N, L + 1)
    r = nll(model, windows, cfg.finetune.seq_len, cfg.finetune.batch_size,
            desc=None if log is None else f"evaluate {corpus}.{split}")
    if max_windows == 0:  # the whole split: its UTF-8 size from the data manifest
        r["bpb"] = bits_per_byte(r["nll"], r["tokens"], c.bytes_utf8(split))
    else:  # the bytes the evaluated target tokens stand for
        r["bpb"] = bits_per_byte(r["nll"], r["tokens"], int(piece_bytes(data.tokenizer)[windows[:, 1:]].sum()))
    if log is not None:
        log(f"[evaluate] {corpus}.{split}: ppl {r['ppl']:.2f}, {r['bpb']:.3f} bits/byte over {r['tokens']:,} tokens "
            f"({time.time() - t0:.1f} s)")
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


def measure(model, data: PreparedData, domain: str, cfg: Config, log=None, when: str = "") -> dict:
    """The generic and the domain test split (cfg.data.test_windows windows of each; 0 = all); with `log`, a line
    before (`when`: e.g. "before fine-tuning") and a progress bar and a line per split."""
    n = cfg.data.test_windows
    if log is not None:
        log(f"[evaluate] test splits of generic and {domain}{' ' + when if when else ''}"
            f"{f' (first {n} windows of each)' if n else ''}")
    return {"generic": evaluate_split(model, data, GENERIC, "test", cfg, n, log),
            domain: evaluate_split(model, data, domain, "test", cfg, n, log)}


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


@dataclass(frozen=True)
class FineTuning:
    """One fine-tuning run on `domain` (its first domain_tokens train tokens; 0: all) into `out`. By default the
    plain one: cfg.finetune, the domain's train split, cross-entropy. t: another TrainConfig (slm-nopt: the
    pretraining's learning rates); batches: another batch source (slm-d: with the teacher's cached top-k); loss_fn
    (slm-d: the distillation loss); fingerprint: the caller's keys the run also depends on (slm-d: its teacher's
    weights)."""

    domain: str
    out: Path
    domain_tokens: int = 0
    t: TrainConfig | None = None
    batches: Any = None
    loss_fn: Callable = cross_entropy
    fingerprint: dict | None = None


def finetune(cfg: Config, data: PreparedData, model, job: FineTuning, resume: bool = True, log=print):
    """Fine-tune one SLM on job.domain (early stopping on domain validation) -> TrainResult (+ summary.json)."""
    t = job.t or cfg.finetune
    batches = job.batches or domain_batches(cfg, data, job.domain, t, job.domain_tokens)
    desc = f"finetune {job.domain}"
    # the weights it starts from (the pretrained parent): a resume after the parent changed is refused
    run = RunOptions(valid_tokens=data.corpora[job.domain].tokens("valid"), loss_fn=job.loss_fn, desc=desc,
                     fingerprint={"start.weights": weights_sha256(model)} | (job.fingerprint or {}), resume=resume)
    r = loop.train(model, t, batches, job.out, run, log=log)  # loop.train: the module's, which tests may replace
    note = step_cap_note(r, t, batches, desc)
    if note:
        log(note)
    write_summary(job.out, r)  # no cost: the specialization's results.json carries it
    return r


def step_cap_note(r, t, batches, desc: str) -> str | None:
    """One line when fine-tuning stopped at its step cap while the domain validation was still falling (the
    best evaluation was the last one): the flag that lifts the cap, the epochs done and what one epoch costs (its
    steps, and its time at the run's measured tokens/s when the metrics have it)."""
    if r.stopped_by != "steps" or not t.steps or r.best_step is None or r.best_step != r.steps:
        return None
    done = batches.epochs(r.steps, t.grad_accum) if hasattr(batches, "epochs") else None
    epochs, cost = (f" after {done:.2f} epochs", "") if done else ("", "")
    if done:
        per_epoch = r.steps / done
        rates = sorted(h["tokens_per_s"] for h in getattr(r, "history", None) or () if h.get("tokens_per_s"))
        pace = ""
        if rates:
            rate = rates[len(rates) // 2]  # the median: the first window carries the start-up
            secs = per_epoch * t.batch_size * t.grad_accum * t.seq_len / rate
            pace = f", ~{secs / 60:.1f} min at this run's {rate:,.0f} tokens/s"
        cost = f"; one epoch is ~{per_epoch:,.0f} steps{pace}"
    return (f"[{desc}] note: stopped at the step cap ({t.steps} steps{epochs}) while validation was still "
            f"falling{cost}; --finetune.steps 0 lifts the cap (early stopping and finetune.max_epochs then end it)")


def finetune_costs(args, r: dict, seq_len: int) -> tuple[StageCost, StageCost]:
    """A fine-tuning run's summary -> (the cost of its steps up to the best validation score, the cost of every step
    it ran). The paper counts the first (App. C: the steps after the best one only served to find it); its wall_s
    is the measured time scaled by best_step / steps. Without a validation score, both are every step."""
    total = training_cost(args, r["tokens"], seq_len, r["wall_s"])
    best, steps = r.get("best_step"), r["steps"]
    if best is None or not steps:
        return total, total
    share = min(best, steps) / steps
    return training_cost(args, round(r["tokens"] * share), seq_len, r["wall_s"] * share), total


def run_fields(r: dict, t) -> dict:
    """results.json's record of the fine-tuning run (r: its summary): its steps, its best step, and what ended it
    (the cap hit first and the budget it was under)."""
    return {"finetune_steps": r["steps"], "best_step": r["best_step"], "stopped_early": r["stopped_early"],
            "stopped_by": r.get("stopped_by", ""), "planned_steps": r.get("planned_steps"),
            "max_epochs": t.max_epochs, "step_cap": t.steps}


def cost_fields(parts: dict[str, StageCost], args, cfg: Config, all_steps: dict[str, StageCost] | None = None) -> dict:
    """cost / cost_parts: what the comparison counts (fine-tuning up to its best step); cost_all_steps /
    cost_parts_all_steps: the same with `all_steps` (every fine-tuning step run) in place of those parts."""
    total = sum(parts.values(), StageCost())
    every = parts | (all_steps or {})
    return {"cost": total.as_dict(), "cost_parts": {k: v.as_dict() for k, v in parts.items()},
            "cost_all_steps": sum(every.values(), StageCost()).as_dict(),
            "cost_parts_all_steps": {k: v.as_dict() for k, v in every.items()},
            "inference_flops_per_token": inference_flops_per_token(args, cfg.finetune.seq_len)}


def specialize_model(cfg: Config, data: PreparedData, domain: str, model, src: Path | None, resume: bool, log,
                     domain_tokens: int = 0, parts: dict | None = None, tune: Callable | None = None,
                     src_sha: str | None = None) -> SpecializeResults:
    """Measure `model` (started from `src`; None: a new model), fine-tune it, measure again -> the results
    (methods.specialize writes them to results.json).

    tune(model, out) -> (TrainResult, cost parts, extra result fields) replaces the plain fine-tuning (slm-d
    distils); parts: costs spent before this stage that count as specialization (slm-is's pretraining); src_sha:
    the sha256 of `src` taken when it was loaded (fingerprint.parent_sha256), what results.json records as
    parent.weights even if `src` is replaced while this runs."""
    out = specialize_dir(cfg, domain, domain_tokens)
    t0 = time.time()
    check_vocab(model, data, str(src or "a new model"))
    # unchanged weights and test splits: the numbers of the last run (a rerun with another fine-tuning budget)
    before = measure_before(model, data, domain, cfg, out, log, measure, write=dist.is_main())
    parts = dict(parts or {})
    if tune is None:
        r, extra = finetune(cfg, data, model, FineTuning(domain, out, domain_tokens), resume, log), {}
    else:
        r, tune_parts, extra = tune(model, out)
        parts.update(tune_parts)
    parts["finetune"], every = finetune_costs(model.args, r.summary(), cfg.finetune.seq_len)
    after = measure(model, data, domain, cfg, log, "after fine-tuning")
    if src_sha is not None:
        # run_specialize puts it in the fingerprint (slm-d's extra brings its teacher's)
        extra = {**extra, "read": {**extra.get("read", {}), "parent.weights": src_sha}}
    return SpecializeResults(
        domain=domain, method=cfg.method, pretrained_from=str(src) if src else None,
        domain_train_tokens=len(domain_train_tokens(data, domain, domain_tokens)) - 1,
        before=before, after=after, **run_fields(r.summary(), cfg.finetune), wall_s=time.time() - t0,
        **cost_fields(parts, model.args, cfg, {"finetune": every}), config=to_dict(cfg), extra=extra)
