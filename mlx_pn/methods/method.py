"""What a method is to the rest of the library: one registry entry (mlx_pn.methods.METHODS).

The recipes, the dispatch and the comparison grid only ever call these fields; a new method is a
module that builds one `Method` and a line in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mlx_pn.config import Config
from mlx_pn.costs import train_flops_per_token
from mlx_pn.methods.layout import pretrain_dir, read_summary


def no_check(cfg: Config) -> None:
    pass


def small_model_flops(cfg: Config, vocab: int, k: int) -> float:
    """Training FLOPs per pretraining token of the small model (cfg.model)."""
    from mlx_pn.models.build import model_args

    return train_flops_per_token(model_args(cfg.model, vocab), cfg.pretrain.seq_len)


def own_summary(cfg: Config) -> dict | None:
    """The method's pretraining summary.json, if it has finished."""
    return read_summary(pretrain_dir(cfg))


def pretrain_once(cfg: Config, data, domains: list[str], log) -> None:
    """The grid's pretraining of a row: the method's pretrain() once (shared by every domain)."""
    from mlx_pn.methods import pretrain

    pretrain(cfg, data, log=log)


@dataclass(frozen=True)
class Method:
    """One method of the paper (or a new one).

    pretrain(cfg, data, resume, log, expert) -> summary dict (expert: only where `experts` is True);
    specialize(cfg, data, domain, resume, log, domain_tokens) -> SpecializeResults (mlx_pn.methods.results;
    methods.specialize writes it to results.json with its fingerprint);
    check(cfg) raises ConfigError for settings this method cannot use;
    flops_per_token(cfg, vocab, k) -> pretraining FLOPs per token (the grid matches budgets with it);
    pretrain_summary(cfg) -> the finished pretraining's summary (its "cost"), None when there is none;
    grid_pretrain(cfg, data, domains, log) runs the pretraining one grid row needs.
    """

    name: str
    pretrain: Callable
    specialize: Callable
    check: Callable[[Config], None] = no_check
    flops_per_token: Callable[[Config, int, int], float] = small_model_flops
    pretrain_summary: Callable[[Config], dict | None] = own_summary
    grid_pretrain: Callable = pretrain_once
    clusterings: tuple[str, ...] = ()  # cluster config keys it needs ("k": routing, "k_importance": resampling)
    brings: tuple[str, ...] = ()  # methods whose rows it reuses in the grid (slm-d: its student and teacher)
    budgeted: bool = True  # False: no pretraining, so one grid row whatever the budget
    experts: bool = False  # pretrain(expert=i) trains one of several independent models
    # a generic pretraining of its own in pretrain_dir (the grid's learning-rate sweep picks its rate by its
    # validation loss); False: none (slm-nopt), one per domain (slm-is) or others' (slm-d)
    own_pretraining: bool = True
    # start(cfg, domain) -> (the pretrained model folder specialize() fine-tunes, the config section describing it):
    # its shape is read from there (parent.adopt_shape); None: the method checks its own start
    start: Callable[[Config, str], tuple] | None = None
    select: str = ""  # the selection rule (cfg.select) that "auto" means for it; "" = it picks no starting SLM
