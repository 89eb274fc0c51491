"""The training loop's side jobs, as callbacks in mlx-lm's style (``mlx_lm.tuner.callbacks.TrainingCallback``).

The loop (mlx_pn.train.loop.step_loop) steps and evaluates; everything else a run does on the way hangs on these
hooks, called in list order: metrics.jsonl (:class:`MetricsLog`), the progress bar and its lines
(:class:`Progress`), checkpoints and what an interrupt reports (:class:`Checkpoints`), the refusal of a
non-finite loss (:class:`NonFinite`) and the best validation weights kept for early stopping (:class:`BestWeights`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from mlx_pn import interrupt
from mlx_pn.config import TrainConfig
from mlx_pn.io import write_text_atomic
from mlx_pn.models.build import save_model
from mlx_pn.train.checkpoint import save_checkpoint
from mlx_pn.train.state import TrainingError, TrainState


class TrainingCallback:
    """mlx-lm's two reports (info: the metrics row of a train-loss report or a validation), plus the per-step
    hooks a resumable run needs: on_step right after each optimizer step (before any report), on_step_end after
    the step's reports and validation; close() once the loop has ended, however it ended."""

    def on_step(self, state: TrainState, batch_index: int) -> None:
        pass

    def on_train_loss_report(self, info: dict) -> None:
        pass

    def on_val_loss_report(self, info: dict) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        pass

    def close(self) -> None:
        pass


def _row_step(line: str) -> float:
    """The step of a metrics line; a torn last line (a crash mid-append) counts as past any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


VAL_ROW = ("step", "valid_nll", "valid_ppl", "valid_tokens")  # a validation's line (its info adds "new_best")


class MetricsLog(TrainingCallback):
    """Append-only JSONL; on resume, lines past the checkpoint's step are dropped (they will recur)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            write_text_atomic(path, "")
        elif path.exists():
            keep = [ln for ln in path.read_text().splitlines() if _row_step(ln) <= resume_step]
            write_text_atomic(path, "".join(k + "\n" for k in keep))  # a kill here must not empty the log

    def write(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]

    def on_train_loss_report(self, info: dict) -> None:
        self.write(**info)

    def on_val_loss_report(self, info: dict) -> None:
        self.write(**{k: info[k] for k in VAL_ROW})


class Progress(TrainingCallback):
    """The tqdm bar (loss and tokens/s on it) and the lines printed through it: each validation during training,
    and where early stopping ended the run."""

    def __init__(self, desc: str, cfg: TrainConfig, start: int):
        self.desc, self.patience, self.last_loss = desc, cfg.patience, None
        self.bar = tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def on_step(self, state: TrainState, batch_index: int) -> None:
        self.last_loss = state.last_loss
        self.bar.update(1)

    def on_train_loss_report(self, info: dict) -> None:
        self.bar.set_postfix(loss=f"{info['loss']:.3f}", tok_s=f"{info['tokens_per_s']:,.0f}")

    def on_val_loss_report(self, info: dict) -> None:
        if info["step"] > 0:  # the step-0 point of the curve is not a line of its own
            self.bar.write(f"[{self.desc}] step {info['step']}: loss {self.last_loss:.4f}, valid ppl "
                           f"{math.exp(info['valid_nll']):.2f}")

    def on_step_end(self, state: TrainState) -> None:
        if state.stopped_early:
            self.bar.write(f"[{self.desc}] early stop at step {state.step}: no improvement in {self.patience} "
                           f"evaluations; keeping step {state.best_step}")

    def close(self) -> None:
        self.bar.close()


class Checkpoints(TrainingCallback):
    """Saves a checkpoint every save_every steps, at the last planned step and where early stopping ends the run
    (`save`: rank 0 only), and tells mlx_pn.interrupt where a Ctrl-C or SIGTERM would leave the run. `last`: the
    newest checkpoint (the one a resume restarts from)."""

    def __init__(self, root: Path, model, optimizer, cfg: TrainConfig, desc: str, fingerprint: dict,
                 last: Path | None, save: bool):
        self.root, self.model, self.optimizer, self.cfg, self.desc = root, model, optimizer, cfg, desc
        self.fingerprint, self.last, self.save = fingerprint, last, save

    def on_step(self, state: TrainState, batch_index: int) -> None:
        interrupt.note(self.desc, state.step, self.last)

    def on_step_end(self, state: TrainState) -> None:
        step, cfg = state.step, self.cfg
        if (step % cfg.save_every == 0 or step == cfg.steps or state.stopped_early) and self.save:
            self.last = save_checkpoint(self.root, step, self.model, self.optimizer, asdict(state),
                                        cfg.keep_checkpoints, fingerprint=self.fingerprint)
        interrupt.note(self.desc, step, self.last)


class NonFinite(TrainingCallback):
    """A non-finite training loss ends the run with the checkpoint to resume from (checkpoints.last)."""

    def __init__(self, desc: str, checkpoints: Checkpoints):
        self.desc, self.checkpoints = desc, checkpoints

    def on_step(self, state: TrainState, batch_index: int) -> None:
        if not math.isfinite(state.last_loss):
            raise TrainingError(
                f"[{self.desc}] non-finite loss {state.last_loss} at step {state.step} (batch index {batch_index}); "
                f"last good checkpoint: {self.checkpoints.last or 'none'}. Lower the learning rate or check the "
                f"data, then resume.")


class BestWeights(TrainingCallback):
    """Early stopping's best validation weights, saved to `folder` at each new best (rank 0)."""

    def __init__(self, folder: Path, model, extra_config: dict | None):
        self.folder, self.model, self.extra_config = folder, model, extra_config

    def on_val_loss_report(self, info: dict) -> None:
        if info["new_best"]:
            save_model(self.folder, self.model, self.extra_config)
