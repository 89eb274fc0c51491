"""The plain baselines: slm (one small model), llm (the large model, section `large`, trained exactly like
the slm) and slm-nopt (no pretraining: the small model trained from scratch on the domain)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlx_pn.commands import recipe_command
from mlx_pn.config import Config, ConfigError
from mlx_pn.costs import StageCost, train_flops_per_token, training_cost
from mlx_pn.data.batches import PackedBatches
from mlx_pn.data.prepare import GENERIC, PreparedData
from mlx_pn.methods.finetune import FineTuning, finetune, specialize_model
from mlx_pn.methods.layout import BASE_METHOD, pretrain_dir
from mlx_pn.methods.method import Method
from mlx_pn.methods.parent import load_parent
from mlx_pn.methods.results import SpecializeResults
from mlx_pn.models.build import build_model, model_args
from mlx_pn.train.stage import Stage, run_stage


def new_model(cfg: Config, data: PreparedData, section: str = "model", seed: int = 0):
    """A freshly initialised model of cfg.<section> (model: the SLM, large: the LLM) for this tokenizer."""
    # the tokenizer: the byte model reads its pieces' bytes (the others ignore it)
    return build_model(model_args(getattr(cfg, section), data.tokenizer.vocab_size, section), seed=seed,
                       tokenizer=data.tokenizer)


def missing_start(src: Path, how: str) -> ConfigError:
    return ConfigError(f"{src} does not exist: run `{how}` with the same --out first")


def load_start(src: Path, cfg: Config, section: str = "model"):
    """(the pretrained model a specialization starts from, the sha256 of the weights loaded: parent.load_parent);
    a ConfigError naming the command that makes it, or the keys where it differs from the model cfg.<section>
    describes (model; large for llm) once methods.specialize has read the checkpoint's shape (parent.adopt_shape)."""
    if not (src / "model.safetensors").exists():
        raise missing_start(src, f"{recipe_command('pretrain')} --method {cfg.method}")
    model, sha = load_parent(src)
    check_same_args(model, cfg, section, src)
    return model, sha


def check_same_args(model, cfg: Config, section: str, src: Path) -> None:
    """A ConfigError when a loaded model is not the one cfg.<section> builds (e.g. --model.hidden_size 32 on a
    64-wide pretrained model): fine-tuning it would silently ignore the flag."""
    want = model_args(getattr(cfg, section), model.args.vocab_size, section)
    have = dataclasses.asdict(model.args) if dataclasses.is_dataclass(model.args) else {}
    diff = {k: (have.get(k), v) for k, v in dataclasses.asdict(want).items() if have.get(k) != v}
    if type(want) is not type(model.args) or diff:
        listed = ", ".join(f"{k} {a} (config: {b})" for k, (a, b) in diff.items()) or type(model.args).__name__
        raise ConfigError(f"{src} is not the model the {section} section describes: it has {listed}; use the "
                          f"{section}.* settings it was pretrained with, or pretrain again with these (another --out, "
                          f"or --no-resume)")


def plain_stage(cfg: Config, data: PreparedData, section: str) -> Stage:
    """One model (cfg.<section>) on the generic train split -> pretrain_dir(cfg)."""
    t, generic = cfg.pretrain, data.corpora[GENERIC]
    what = "pretrain" if cfg.method == BASE_METHOD else f"pretrain {cfg.method}"

    def before(model, batches, log) -> dict:
        log(f"[{what}] {getattr(cfg, section).preset} model: {model.num_params() / 1e6:.2f}M parameters "
            f"({model.num_params(embeddings=False) / 1e6:.2f}M without embeddings)")
        log(f"[{what}] {t.steps} steps x {t.batch_size * t.grad_accum * t.seq_len} tokens = "
            f"{batches.epochs(t.steps, t.grad_accum):.2f} epochs of the generic train split")
        return {}

    return Stage(
        pretrain_dir(cfg), what, t, model=lambda: new_model(cfg, data, section, seed=t.seed),
        batches=lambda: PackedBatches(generic.tokens("train"), t.seq_len, t.batch_size, t.seed,
                                      "data.generic (train split)"),
        valid=lambda: (generic.tokens("valid"), None), before=before,
        cost=lambda model, r: training_cost(model.args, r.tokens, t.seq_len, r.wall_s))


def _pretrain_plain(section: str):
    def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert=None) -> dict:
        return run_stage(plain_stage(cfg, data, section), resume, log)

    return pretrain


def _specialize_plain(section: str):
    def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
                   domain_tokens: int = 0) -> SpecializeResults:
        """Fine-tune the method's own pretrained model (OUT/pretrain[-METHOD]/final, cfg.<section>) on the domain."""
        src = pretrain_dir(cfg) / "final"
        model, sha = load_start(src, cfg, section)
        return specialize_model(cfg, data, domain, model, src, resume, log, domain_tokens, src_sha=sha)

    return specialize


def _own_final(section: str):
    """Method.start of a method that fine-tunes its own pretraining's final/ (described by cfg.<section>)."""
    return lambda cfg, domain: (pretrain_dir(cfg) / "final", section)


specialize_pretrained = _specialize_plain("model")


def large_model_flops(cfg: Config, vocab: int, k: int) -> float:
    return train_flops_per_token(model_args(cfg.large, vocab, "large"), cfg.pretrain.seq_len)


SLM = Method("slm", pretrain=_pretrain_plain("model"), specialize=specialize_pretrained, start=_own_final("model"))
LLM = Method("llm", pretrain=_pretrain_plain("large"), specialize=_specialize_plain("large"),
             flops_per_token=large_model_flops, start=_own_final("large"))


# --- slm-nopt ---------------------------------------------------------------------------------------


def nopt_train_config(cfg: Config):
    """slm-nopt trains from scratch on the domain: the fine-tuning budget and early stopping, with the
    pretraining learning-rate schedule (a random model needs the large rate)."""
    p = cfg.pretrain
    return dataclasses.replace(cfg.finetune, lr=p.lr, min_lr=p.min_lr, warmup=p.warmup)


def _nopt_pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert=None) -> dict:
    log(f"[pretrain {cfg.method}] nothing to pretrain: `{recipe_command('specialize')} --method {cfg.method}` trains "
        "the SLM from scratch on the domain")
    return {"method": cfg.method, "steps": 0, "best_valid_nll": None, "cost": StageCost(0.0, 0, 0.0).as_dict()}


def _nopt_specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
                     domain_tokens: int = 0) -> SpecializeResults:
    model = new_model(cfg, data, seed=cfg.finetune.seed)

    def tune(model, out):
        job = FineTuning(domain, out, domain_tokens, t=nopt_train_config(cfg))
        return finetune(cfg, data, model, job, resume, log), {}, {}

    return specialize_model(cfg, data, domain, model, None, resume, log, domain_tokens, tune=tune)


SLM_NOPT = Method("slm-nopt", pretrain=_nopt_pretrain, specialize=_nopt_specialize, own_pretraining=False,
                  pretrain_summary=lambda cfg: None, grid_pretrain=lambda *a: None, budgeted=False)
