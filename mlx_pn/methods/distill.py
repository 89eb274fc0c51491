"""slm-d: distillation. Pretraining is slm's and llm's own (student and teacher; reused when already
there); specialization trains the pretrained slm on the domain against the llm fine-tuned on the same
domain (OUT/specialize-llm/DOMAIN): (1 - alpha) CE + alpha T^2 KL(p_T || q_T) over the teacher's top-k
(mlx_pn.train.distill). Its pretraining cost is the student's plus the teacher's, as in the paper."""

from __future__ import annotations

from pathlib import Path

from mlx_pn.commands import recipe_command
from mlx_pn.config import Config, ConfigError
from mlx_pn.costs import StageCost, forward_cost
from mlx_pn.data.prepare import PreparedData
from mlx_pn.io import file_sha256
from mlx_pn.methods.finetune import (FineTuning, check_vocab, domain_batches, domain_train_tokens, finetune,
                                     specialize_model)
from mlx_pn.methods.layout import as_method, pretrain_dir, read_summary, specialize_dir
from mlx_pn.methods.method import Method
from mlx_pn.methods.parent import load_parent
from mlx_pn.methods.results import SpecializeResults
from mlx_pn.methods.slm import LLM, SLM, load_start

STUDENT, TEACHER = SLM.name, LLM.name


def check(cfg: Config) -> None:
    if cfg.model.frontend == "byte":
        raise ConfigError("model.frontend=byte: slm-d distils next-token distributions, which a byte model scores "
                          "with one full vocabulary pass per position; distil a token model (model.frontend=token)")


def pretrain(cfg: Config, data: PreparedData, resume: bool = True, log=print, expert=None) -> dict:
    """The student (slm's own pretraining, shared) and the teacher (llm)."""
    parts = {m.name: m.pretrain(as_method(cfg, m.name), data, resume, log) for m in (SLM, LLM)}
    cost = sum((StageCost.from_dict(p.get("cost")) for p in parts.values()), StageCost())
    return {"method": cfg.method, "steps": sum(p["steps"] for p in parts.values()),
            "best_valid_nll": parts[STUDENT].get("best_valid_nll"), "cost": cost.as_dict(),
            "student": str(pretrain_dir(as_method(cfg, STUDENT))), "teacher": str(pretrain_dir(as_method(cfg, TEACHER)))}


def pretrain_summary(cfg: Config) -> dict | None:
    """The student's summary with the student's + the teacher's cost and steps."""
    s, t = (read_summary(pretrain_dir(as_method(cfg, m))) for m in (STUDENT, TEACHER))
    if s is None or t is None:
        return None
    cost = StageCost.from_dict(s["cost"]) + StageCost.from_dict(t["cost"])
    return {**s, "cost": cost.as_dict(), "steps": s["steps"] + t["steps"]}


def teacher_dir(cfg: Config, domain: str, domain_tokens: int = 0) -> Path:
    if cfg.distill.teacher:
        return Path(cfg.distill.teacher)
    return specialize_dir(as_method(cfg, TEACHER), domain, domain_tokens) / "final"


def specialize(cfg: Config, data: PreparedData, domain: str, resume: bool = True, log=print,
               domain_tokens: int = 0) -> SpecializeResults:
    src = student_start(cfg, domain)[0]
    student, sha = load_start(src, cfg)

    def tune(model, out):
        return distill(cfg, data, domain, model, out, resume, log, domain_tokens)

    return specialize_model(cfg, data, domain, student, src, resume, log, domain_tokens, tune=tune, src_sha=sha)


def student_start(cfg: Config, domain: str) -> tuple[Path, str]:
    """Method.start: the student is slm's pretrained model (cfg.model)."""
    return pretrain_dir(as_method(cfg, STUDENT)) / "final", "model"


def distill(cfg: Config, data: PreparedData, domain: str, student, out: Path, resume: bool, log,
            domain_tokens: int = 0):
    """Train the pretrained SLM on the domain against the fine-tuned teacher -> (TrainResult, cost parts,
    extra result fields)."""
    from mlx_pn.train.distill import TeacherCache, TeacherCacheBatches, cached_distill_loss, live_distill_loss

    tdir, dc, t = teacher_dir(cfg, domain, domain_tokens), cfg.distill, cfg.finetune
    if not (tdir / "model.safetensors").exists():
        raise ConfigError(f"slm-d needs the domain-fine-tuned teacher {tdir}: run `{recipe_command('specialize')} "
                          f"--method {TEACHER} --domain {domain}` with the same --out first (or set --distill.teacher)")
    teacher, teacher_sha = load_parent(tdir)  # under its stage's lock: the hash is of the weights loaded
    check_vocab(teacher, data, str(tdir))
    # a resume after the teacher changed (fine-tuned again, another --distill.teacher) is refused
    teacher_fp = {"teacher.weights": file_sha256(tdir / "model.safetensors")}
    k = min(dc.top_k, teacher.args.vocab_size)
    base = domain_batches(cfg, data, domain, domain_tokens=domain_tokens)
    parts = {}
    teacher_results = tdir.parent / "results.json"
    if teacher_results.exists() and not dc.teacher:
        import json

        parts["teacher_finetune"] = StageCost.from_dict(json.loads(teacher_results.read_text()).get("cost"))
    from mlx_pn.train.state import budget

    # windows fine-tuning may read (fewer with early stopping); its step budget may come from finetune.max_epochs
    visits = budget(t, base)[0].steps * t.batch_size * t.grad_accum
    mode = dc.cache if dc.cache != "auto" else ("disk" if visits >= base.n_windows else "live")
    if mode == "disk":
        tokens = domain_train_tokens(data, domain, domain_tokens)
        cache = TeacherCache(out / "teacher", base.n_windows, t.seq_len, k)
        key = {"teacher": teacher_fp["teacher.weights"], "k": k, "temperature": dc.temperature,
               "seq_len": t.seq_len, "windows": base.n_windows}
        secs = cache.build(teacher, tokens, dc.temperature, key, t.batch_size, log)
        parts["teacher_forward"] = forward_cost(teacher.args, base.n_windows * t.seq_len, t.seq_len, secs)
        job = FineTuning(domain, out, batches=TeacherCacheBatches(base, cache),
                         loss_fn=cached_distill_loss(dc.alpha, dc.temperature), fingerprint=teacher_fp)
        r = finetune(cfg, data, student, job, resume, log)
    else:
        job = FineTuning(domain, out, batches=base, loss_fn=live_distill_loss(teacher, k, dc.alpha, dc.temperature),
                         fingerprint=teacher_fp)
        r = finetune(cfg, data, student, job, resume, log)
        parts["teacher_forward"] = forward_cost(teacher.args, r.tokens, t.seq_len, None)  # inside the steps' time
    extra = {"teacher": str(tdir), "read": {"teacher.weights": teacher_sha}, "distill": {"mode": mode, "top_k": k, "alpha": dc.alpha,
                                               "temperature": dc.temperature,
                                               "teacher_cache_s": parts["teacher_forward"].wall_s}}
    return r, parts, extra


def _grid_pretrain(cfg: Config, data, domains, log) -> None:
    """Nothing: the grid's slm and llm rows of the same budget are the student and the teacher."""


SLM_D = Method("slm-d", pretrain=pretrain, specialize=specialize, check=check, start=student_start,
               pretrain_summary=pretrain_summary,
               grid_pretrain=_grid_pretrain, brings=(STUDENT, TEACHER), own_pretraining=False)
