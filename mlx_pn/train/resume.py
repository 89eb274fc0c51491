"""Resuming a run: its newest good checkpoint, taken only into the run that made it, and (data parallel) rank 0's
position on every rank."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import mlx.core as mx

from mlx_pn.config import TrainConfig
from mlx_pn.fingerprint import check_same
from mlx_pn.models.build import CheckpointError
from mlx_pn.train import distributed as dist
from mlx_pn.train.checkpoint import latest_good_checkpoint, restore_checkpoint
from mlx_pn.train.state import TrainingError, TrainState


def restore(root: Path, model, optimizer, cfg: TrainConfig, fingerprint: dict, desc: str,
            log) -> tuple[TrainState, Path | None]:
    """The newest good checkpoint under `root` loaded into `model` and `optimizer` -> (its TrainState, its folder);
    (a new TrainState, None) when there is none. Refused (TrainingError, StaleRunError, CheckpointError) when it
    is past cfg.steps, made with another fingerprint or edited."""
    found = latest_good_checkpoint(root)
    if not found:
        return TrainState(), None
    path, saved = found
    _check_steps(path, saved, cfg, desc)
    restore_checkpoint(path, model, optimizer)  # another shape: a CheckpointError naming the folder
    _check_resumable(path, saved, cfg, fingerprint, desc)
    state = TrainState.from_dict(saved["trainer"] | {"step": saved["step"]})
    log(f"[{desc}] resuming from {path} (step {state.step})")
    return state, path


def _check_steps(path: Path, saved: dict, cfg: TrainConfig, desc: str) -> None:
    step = saved["step"]
    if step > cfg.steps:
        raise TrainingError(f"[{desc}] {path} is at step {step}, past the {cfg.steps} steps this config plans; raise "
                            f"the steps to at least {step} to continue that run, or rerun with --no-resume to start "
                            f"over (the old run is moved aside)")


def _check_resumable(path: Path, saved: dict, cfg: TrainConfig, fp: dict, desc: str) -> None:
    """A checkpoint is resumed only into the run that made it: not past the planned steps (_check_steps), with
    the same fingerprint, and a token count that matches its step (a state.json edited by hand does not)."""
    step = saved["step"]
    check_same(saved.get("fingerprint"), fp, f"[{desc}] {path.parent.parent} (checkpoint {path.name})")
    tokens = saved["trainer"].get("tokens")
    if tokens is not None and tokens != step * cfg.batch_size * cfg.grad_accum * cfg.seq_len:
        raise CheckpointError(f"{path}/state.json: {tokens:,} tokens trained is not {step} steps of "
                              f"{cfg.batch_size * cfg.grad_accum * cfg.seq_len} tokens; the file was edited or "
                              f"damaged: delete {path} to resume from the checkpoint before it")


def sync_state(model, optimizer, state: TrainState, resumed: bool, group) -> tuple[TrainState, bool]:
    """Start or resume of a data-parallel run: rank 0's parameters, optimizer state and TrainState on every rank
    (parameters and optimizer state updated in place) -> (rank 0's TrainState, whether rank 0 resumed)."""
    model.update(dist.broadcast(model.parameters(), group))
    optimizer.state = dist.broadcast(optimizer.state, group)
    mx.eval(model.parameters(), optimizer.state)
    got = dist.broadcast_json({"state": asdict(state), "resumed": resumed}, group)
    return TrainState.from_dict(got["state"]), got["resumed"]
