"""The methods, by name: the registry every recipe, the dispatch and the comparison grid read.

A new method is one module building a `Method` (mlx_pn.methods.method) and one line in METHODS. The
order is the grid's: a method comes after the methods whose pretraining it reuses.
"""

from __future__ import annotations

import difflib

from mlx_pn.config import Config, ConfigError
from mlx_pn.methods import distill, importance, routed, slm
from mlx_pn.methods.finetune import check_domain
from mlx_pn.methods.layout import specialize_dir
from mlx_pn.methods.method import Method

METHODS: dict[str, Method] = {m.name: m for m in (
    slm.SLM, slm.LLM, distill.SLM_D, importance.SLM_IS, routed.SLM_MIX, routed.SLM_PN, routed.SLM_HN,
    slm.SLM_NOPT)}


def get(name: str) -> Method:
    """The registry entry of a method name; a ConfigError with the closest name otherwise."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"method: unknown method '{name}'{hint} (implemented: {', '.join(METHODS)})")
    return METHODS[name]


def check(cfg: Config) -> Method:
    """cfg.method's entry, after its own config rules (and the model presets every method builds from)."""
    from mlx_pn.models.build import check_section

    # the small model sees every training window; the large one (llm, slm-d's teacher) is checked when it is built
    windows = {f"{t}.seq_len": getattr(cfg, t).seq_len for t in ("pretrain", "finetune")}
    check_section(cfg.model, "model", windows)
    check_section(cfg.large, "large")
    method = get(cfg.method)
    method.check(cfg)
    return method


def _main_rank_log(log):
    """Under mlx.launch only rank 0 talks (every rank runs the same stages)."""
    from mlx_pn.train import distributed as dist

    return log if dist.is_main() else (lambda *a, **k: None)


def pretrain(cfg: Config, data, resume: bool = True, log=print, expert: int | None = None) -> dict:
    """Pretrain cfg.method's generic model -> its pretraining folder's summary (with the stage's cost).

    expert: methods of independent experts only (slm-mix): train just that one."""
    method, log = check(cfg), _main_rank_log(log)
    if expert is not None and not method.experts:
        raise ConfigError(f"--expert only applies to methods of independent experts "
                          f"({', '.join(m for m, e in METHODS.items() if e.experts)}; got --method {cfg.method})")
    return method.pretrain(cfg, data, resume=resume, log=log, expert=expert)


def specialize(cfg: Config, data, domain: str, resume: bool = True, log=print, domain_tokens: int = 0) -> dict:
    """Specialize cfg.method to one domain (domain_tokens: fine-tune on only the first N train tokens) ->
    results.json's contents: test perplexities before and after, the stage's cost."""
    from mlx_pn.fingerprint import specialize_fingerprint
    from mlx_pn.train.stage import run_specialize

    method, log = check(cfg), _main_rank_log(log)
    check_domain(cfg, data, domain)
    if method.start is not None:  # a pretraining made with other model.* flags: its shape, said in one line
        from mlx_pn.methods.parent import adopt_shape

        cfg = adopt_shape(cfg, *method.start(cfg, domain), log=log)

    def fingerprint_of(results: dict) -> dict:
        return specialize_fingerprint(cfg, data, domain, results.get("pretrained_from"), results.get("teacher"))

    return run_specialize(specialize_dir(cfg, domain, domain_tokens), resume, log, f"[specialize] {domain}",
                          fingerprint_of, lambda: method.specialize(cfg, data, domain, resume=resume, log=log,
                                                                    domain_tokens=domain_tokens).as_dict())


def load_config(path=None, overrides: dict[str, str] | None = None, cls=Config):
    """mlx_pn.config.load_config, then cfg.method's own rules: what every recipe and test loads configs with."""
    from mlx_pn import config

    cfg = config.load_config(path, overrides, cls)
    check(cfg)
    return cfg
