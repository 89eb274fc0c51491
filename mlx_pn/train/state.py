"""Where a training run is and what it ends with: the values the loop, its callbacks and its caller share.

Where a run is (step, early-stopping bookkeeping, token count, last loss) is one :class:`TrainState`, saved whole in
every checkpoint and, in a data-parallel run, broadcast whole from rank 0. :func:`budget` sets the steps a run plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from mlx_pn.config import TrainConfig


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainState:
    """Where a run is. Saved whole as a checkpoint's state.json "trainer", broadcast whole to every rank."""

    step: int = 0  # optimizer steps done
    best_valid_nll: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations in a row without a new best (early stopping)
    tokens: int = 0  # trained on so far (global batch: every rank's rows)
    last_loss: float | None = None  # of the last step trained; None before the first
    stopped_early: bool = False  # kept in the checkpoint: a resumed run stays stopped

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        """Ignores unknown keys; checkpoints written before TrainState hold the same keys without `step`
        (and without last_loss / stopped_early until they were set)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def record_eval(self, step: int, valid_nll: float) -> bool:
        """One validation result -> True when it is a new best (which resets the count of bad evaluations)."""
        if self.best_valid_nll is None or valid_nll < self.best_valid_nll - 1e-6:
            self.best_valid_nll, self.best_step, self.bad_evals = valid_nll, step, 0
            return True
        self.bad_evals += 1
        return False


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    best_valid_nll: float | None
    best_step: int | None
    stopped_early: bool
    tokens: int
    wall_s: float
    data_wait_s: float = 0.0  # time the step waited for the prefetch thread
    planned_steps: int = 0  # the step budget (budget(): steps, or max_epochs over the batches' windows)
    stopped_by: str = ""  # what ended the run: "early stopping", "max_epochs" or "steps" (the first cap hit)
    fingerprint: dict = field(default_factory=dict)  # what the result depends on (run_fingerprint)
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Every field but the history and the fingerprint, in declaration order: a stage's summary.json before its
        cost is added (methods.layout.write_summary adds the fingerprint too)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("history", "fingerprint")}


def budget(cfg: TrainConfig, batches) -> tuple[TrainConfig, str]:
    """The run's step budget -> (cfg with `steps` set to it, the cap that sets it: "max_epochs" or "steps").

    cfg.max_epochs > 0 caps the run at ceil(max_epochs x batches.n_windows / (batch_size x grad_accum)) steps and
    cfg.steps > 0 at steps (0: no step cap); the lower cap wins. Early stopping may end the run before either. The
    learning-rate schedule decays over this budget."""
    if not cfg.max_epochs:
        return cfg, "steps"
    n = getattr(batches, "n_windows", None)
    if n is None:
        raise TrainingError(f"max_epochs={cfg.max_epochs} needs batches that count their windows "
                            f"({type(batches).__name__} does not); set max_epochs 0 and a number of steps")
    epoch_steps = max(1, math.ceil(cfg.max_epochs * n / (cfg.batch_size * cfg.grad_accum)))
    if cfg.steps and cfg.steps <= epoch_steps:
        return cfg, "steps"
    return replace(cfg, steps=epoch_steps), "max_epochs"
