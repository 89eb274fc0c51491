"""How a routed method's specialization picks the SLM it starts from (cfg.select): a table of rules.

Each rule is three functions: pick (which cluster, or the whole histogram; logged), tune (fine-tune the picked
SLM -> its run summary) and costs (what picking cost on top of fine-tuning). A new rule is one SELECTORS entry;
mlx_pn.config.SELECTS lists the names a config may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlx_pn.config import Config
from mlx_pn.costs import StageCost, forward_cost
from mlx_pn.data.prepare import PreparedData
from mlx_pn.methods.finetune import FineTuning, finetune, finetune_costs
from mlx_pn.methods.layout import read_summary
from mlx_pn.models.build import load_model, save_model
from mlx_pn.train.evaluate import nll


@dataclass(frozen=True)
class Context:
    """What every rule reads: make(cluster id | histogram) -> an SLM, the domain's cluster histogram."""

    cfg: Config
    data: PreparedData
    domain: str
    make: Callable
    hist: np.ndarray
    k: int
    out: Path
    resume: bool
    log: Callable
    domain_tokens: int

    def candidate_dir(self, i: int) -> Path:
        return self.out / "candidates" / f"expert-{i:02d}"

    def top(self) -> str:
        return ", ".join(f"{i}: {self.hist[i]:.2f}" for i in np.argsort(-self.hist)[:3])


@dataclass(frozen=True)
class Pick:
    """A rule's decision: `choice` (a cluster id, or "histogram"), what make() builds it from (`start`), and the
    candidates' domain validation NLL when the rule measured them."""

    choice: int | str
    start: Any
    valid_nll: dict = field(default_factory=dict)


def pick_histogram(c: Context) -> Pick:
    c.log(f"[specialize {c.cfg.method}] histogram: projecting with {c.domain}'s whole cluster histogram (top "
          f"clusters {c.top()})")
    return Pick("histogram", c.hist)


def pick_most_frequent(c: Context) -> Pick:
    choice = int(c.hist.argmax())
    c.log(f"[specialize {c.cfg.method}] most-frequent: cluster {choice}, {c.hist[choice]:.0%} of {c.domain}'s train "
          f"windows (top clusters {c.top()})")
    return Pick(choice, choice)


def _lowest(c: Context, select: str, valid_nll: dict) -> Pick:
    choice = min(valid_nll, key=lambda i: valid_nll[i])
    c.log(f"[specialize {c.cfg.method}] {select}: cluster {choice} (domain valid nll "
          + ", ".join(f"{i}: {v:.3f}" for i, v in valid_nll.items()) + ")")
    return Pick(choice, choice, valid_nll)


def pick_best_loss(c: Context) -> Pick:
    t, valid_nll = c.cfg.finetune, {}
    for i in range(c.k):
        valid_nll[i] = nll(c.make(i), c.data.corpora[c.domain].tokens("valid"), t.seq_len, t.batch_size,
                           t.eval_batches * t.batch_size)["nll"]
        c.log(f"[specialize {c.cfg.method}] best-loss: cluster {i}/{c.k}: {c.domain} valid nll {valid_nll[i]:.3f}")
    return _lowest(c, "best-loss", valid_nll)


def pick_all(c: Context) -> Pick:
    """Fine-tune every cluster's SLM under candidates/ and keep the best domain validation (k times the cost)."""
    valid_nll = {i: finetune(c.cfg, c.data, c.make(i), FineTuning(c.domain, c.candidate_dir(i), c.domain_tokens),
                             c.resume, c.log).best_valid_nll for i in range(c.k)}
    return _lowest(c, "all", valid_nll)


def tune_picked(c: Context, model, pick: Pick):
    """Fine-tune the picked SLM in the specialization's folder -> (the model, its run summary)."""
    return model, finetune(c.cfg, c.data, model, FineTuning(c.domain, c.out, c.domain_tokens), c.resume,
                           c.log).summary()


def tune_all(c: Context, model, pick: Pick):
    """The picked candidate is already fine-tuned: its final model becomes the specialization's."""
    model = load_model(c.candidate_dir(pick.choice) / "final")
    save_model(c.out / "final", model)
    return model, read_summary(c.candidate_dir(pick.choice))


def no_costs(c: Context, args) -> tuple[dict, dict]:
    return {}, {}


def best_loss_costs(c: Context, args) -> tuple[dict, dict]:
    """k validation passes before fine-tuning."""
    t = c.cfg.finetune
    return {"selection": forward_cost(args, c.k * t.eval_batches * t.batch_size * t.seq_len, t.seq_len)}, {}


def all_costs(c: Context, args) -> tuple[dict, dict]:
    """Every candidate's fine-tuning (to its best step, and all its steps)."""
    seq_len = c.cfg.finetune.seq_len
    costs = [finetune_costs(args, read_summary(c.candidate_dir(i)), seq_len) for i in range(c.k)]
    to_best, every = (sum((cost[j] for cost in costs), StageCost()) for j in (0, 1))
    return {"finetune": to_best}, {"finetune": every}


@dataclass(frozen=True)
class Selector:
    pick: Callable[[Context], Pick]
    tune: Callable = tune_picked
    costs: Callable[[Context, Any], tuple[dict, dict]] = no_costs  # -> (parts, every) replacing the defaults


SELECTORS: dict[str, Selector] = {
    "histogram": Selector(pick_histogram),
    "most-frequent": Selector(pick_most_frequent),
    "best-loss": Selector(pick_best_loss, costs=best_loss_costs),
    "all": Selector(pick_all, tune=tune_all, costs=all_costs),
}
