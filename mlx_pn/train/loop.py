"""THE training loop, used by every recipe (pretraining, fine-tuning, and every method).

:func:`train` runs one training into a folder: it holds the folder's lock, resumes from the newest good checkpoint
of the same run, builds the optimizer and the compiled step (mlx_pn.train.step) and hands them to
:func:`step_loop`, which steps, validates and reports to callbacks in mlx-lm's style (mlx_pn.train.callbacks:
metrics, progress, checkpoints, interrupts, early stopping's best weights). The loss and the batches are
arguments, so methods differ by a loss function or a batch source, never by a copy of this loop.

Files under ``out_dir``: ``train_config.json``, ``checkpoints/step_*/`` (resumable, hash-checked),
``metrics.jsonl`` (one JSON object per log/eval line), ``best/`` (early stopping: the best validation
weights) and ``final/`` (the weights this run ends with: the best ones when early stopping is on). The
run's summary is not written here: :meth:`TrainResult.summary` gives it to the caller, who adds the stage's
cost and writes it once.

Data parallel (launched with ``mlx.launch``; mlx_pn.train.distributed): each rank reads its rows of every global
batch, the step averages gradients over ranks, and only rank 0 writes files or prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from mlx_pn import interrupt, memory, runlock
from mlx_pn.config import TrainConfig, to_dict
from mlx_pn.data.batches import PackedBatches, Prefetcher
from mlx_pn.fingerprint import array_sha256, batches_keys, model_keys, train_keys
from mlx_pn.io import write_json_atomic
from mlx_pn.models.build import save_model
from mlx_pn.train import distributed as dist
from mlx_pn.train.callbacks import BestWeights, Checkpoints, MetricsLog, NonFinite, Progress, TrainingCallback
from mlx_pn.train.evaluate import nll
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.optim import current_lr, make_optimizer
from mlx_pn.train.resume import restore, sync_state
from mlx_pn.train.state import TrainingError, TrainResult, TrainState, budget
from mlx_pn.train.step import compute_dtype, make_step


@dataclass(frozen=True)
class RunOptions:
    """What a run needs besides its model, TrainConfig and batches (the defaults: a plain run of its own).

    valid_tokens: a 1-D split or (N, L + 1) windows to validate on; valid_labels: their (N,) per-window cluster ids
    (for models called as model(x, ids)). loss_fn(model, x, y, *extras): the batches' extras reach it.
    desc: the run's name in messages; extra_config: keys saved with the model's config (best/, final/);
    fingerprint: keys of the caller's added to run_fingerprint's: a checkpoint made with another fingerprint is
    not resumed (StaleRunError listing the keys that differ). resume False: a previous run's files are moved
    aside. group: None = the ranks this process was launched with (data parallel; a single process without a
    launcher), dist.SOLO = this process alone (e.g. one slm-mix expert per rank), or an mx.distributed.Group."""

    valid_tokens: np.ndarray | None = None
    valid_labels: np.ndarray | None = None
    loss_fn: Callable = cross_entropy
    desc: str = "train"
    extra_config: dict | None = None
    fingerprint: dict | None = None
    resume: bool = True
    group: object = None


RUN_FILES = ("checkpoints", "metrics.jsonl", "train_config.json", "best", "final", "summary.json", "results.json")


def run_fingerprint(model, cfg: TrainConfig, batches, valid_tokens=None, valid_labels=None,
                    extra: dict | None = None) -> dict:
    """What a run of train(model, cfg, batches, ...) computes depends on (mlx_pn.fingerprint): call it before
    training. extra: the caller's own keys (a loss's settings; a fine-tuning's start.weights, its parent)."""
    fp = train_keys(cfg) | model_keys(model) | batches_keys(batches)
    if valid_tokens is not None:
        fp["data.valid"] = array_sha256(valid_tokens)
    if valid_labels is not None:
        fp["data.valid.labels"] = array_sha256(valid_labels)
    return fp | (extra or {})


def train(model, cfg: TrainConfig, batches: PackedBatches, out_dir: str | Path, run: RunOptions = RunOptions(),
          log: Callable = print) -> TrainResult:
    """Train `model` in place for budget(cfg, batches) steps (or until early stopping) and write `out_dir`, holding
    its run lock (rank 0; mlx_pn.runlock), after moving a previous run's files aside when run.resume is False, so
    its checkpoints are never resumed later.

    `batches.batch(step, A)` gives (A, B, L + 1) tokens, or a tuple (tokens, *extras) whose extras reach
    run.loss_fn. cfg.batch_size is the global batch: each of n data-parallel ranks computes batch_size / n rows."""
    main = dist.resolve(run.group)[1] == 0
    with runlock.hold(out_dir, log, enabled=main):
        if not run.resume and main and any((Path(out_dir) / n).exists() for n in ("checkpoints", "final")):
            runlock.set_aside(out_dir, RUN_FILES, log)
        return _run(model, cfg, batches, Path(out_dir), run, log)


def _run(model, cfg: TrainConfig, batches, out: Path, run: RunOptions, log: Callable) -> TrainResult:
    """train() inside the lock: the optimizer, the resume point, the callbacks, the loop, the final model."""
    group, rank, world_size = dist.resolve(run.group)
    main, desc = rank == 0, run.desc
    cfg, cap = budget(cfg, batches)  # cfg.steps: the planned steps from here on
    log = log if main else _quiet
    check_fits(model, cfg, desc, log)  # before the optimizer state: refused with the numbers
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    fp = run_fingerprint(model, cfg, batches, run.valid_tokens, run.valid_labels, run.fingerprint) if main else {}
    state, last = (restore(out / "checkpoints", model, optimizer, cfg, fp, desc, log) if run.resume and main
                   else (TrainState(), None))
    resumed = last is not None
    if group is not None:  # rank 0's weights, optimizer state and position everywhere (no shared disk needed)
        state, resumed = sync_state(model, optimizer, state, resumed, group)
    start = state.step
    interrupt.note(desc, start, last)
    # MLX 0.32 cannot restore an arbitrary RNG state, so the generator is re-seeded from (seed, step):
    # any randomness in a loss (none in the built-in ones) is then a function of where training is.
    mx.random.seed(cfg.seed * 1_000_003 + start)
    early = cfg.patience > 0 and run.valid_tokens is not None
    checkpoints = Checkpoints(out / "checkpoints", model, optimizer, cfg, desc, fp, last, save=main)
    callbacks: list[TrainingCallback] = [checkpoints, NonFinite(desc, checkpoints)]
    metrics = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", to_dict(cfg) | ({"data_parallel_ranks": world_size}
                                                                     if world_size > 1 else {}))
        metrics = MetricsLog(out / "metrics.jsonl", start if resumed else None)
        callbacks += [metrics] + ([BestWeights(out / "best", model, run.extra_config)] if early else [])
        callbacks.append(Progress(desc, cfg, start))
    step_fn = make_step(model, optimizer, run.loss_fn, cfg.grad_accum, cfg.grad_clip, cfg.compile, group,
                        compute_dtype(cfg.precision))
    validate = None if run.valid_tokens is None else make_validate(model, cfg, state, run.valid_tokens,
                                                                   run.valid_labels, group, callbacks)
    pf = None
    try:
        if start == 0 and validate is not None and not resumed:
            validate(0)  # the "before training" point of every curve
        pf = Prefetcher(dist.sharded_source(batches, cfg.grad_accum, rank, world_size), start, cfg.steps)
        t0 = time.perf_counter()
        step_loop(model, optimizer, step_fn, pf, cfg, state, validate, callbacks)
    finally:
        if pf is not None:
            pf.close()
        for c in callbacks:
            c.close()
    _keep_final(model, out, run, group, early, main)
    # A run resumed from its last checkpoint trains no step: it reports the loss that checkpoint recorded.
    result = TrainResult(steps=state.step, final_loss=math.nan if state.last_loss is None else state.last_loss,
                         best_valid_nll=state.best_valid_nll, best_step=state.best_step,
                         stopped_early=state.stopped_early, tokens=state.tokens, wall_s=time.perf_counter() - t0,
                         data_wait_s=pf.wait_s, planned_steps=cfg.steps, fingerprint=fp,
                         stopped_by="early stopping" if state.stopped_early else cap,
                         history=metrics.rows() if metrics is not None else [])
    log(f"[{desc}] stopped by {result.stopped_by} at step {state.step} of {cfg.steps} planned"
        + (f" ({batches.epochs(state.step, cfg.grad_accum):.2f} epochs)" if hasattr(batches, "epochs") else "")
        + ("" if state.best_step is None else f"; best validation at step {state.best_step}"))
    interrupt.done()
    dist.barrier(group)  # no rank leaves before rank 0 has written the final model
    return result


def step_loop(model, optimizer, step_fn: Callable, source: Prefetcher, cfg: TrainConfig, state: TrainState,
              validate: Callable[[int], None] | None, callbacks: list[TrainingCallback]) -> None:
    """Steps state.step + 1 .. cfg.steps (none when the state has stopped early), updating `state` in place: the
    train loss reported every log_every steps, a validation every eval_every steps (early stopping after
    cfg.patience of them without a new best), each step's start and end to the callbacks. The last planned step
    is always reported and validated. source.get() -> (batch index, tokens or (tokens, *extras))."""
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    early = cfg.patience > 0 and validate is not None
    t0 = window_t = time.perf_counter()
    window_tokens = 0
    for step in range(state.step + 1, cfg.steps + 1) if not state.stopped_early else ():
        i, batch = source.get()
        arrays = batch if isinstance(batch, tuple) else (batch,)  # tokens (A, B, L + 1), *extras (A, B, ...)
        loss, gnorm = step_fn(*(mx.array(a) for a in arrays))
        mx.eval(loss, gnorm, model.state, optimizer.state)
        state.step, state.last_loss = step, loss.item()
        state.tokens += tokens_per_step
        window_tokens += tokens_per_step
        for c in callbacks:
            c.on_step(state, i)
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            info = dict(step=step, loss=state.last_loss, lr=current_lr(optimizer), grad_norm=gnorm.item(),
                        tokens_per_s=window_tokens / max(now - window_t, 1e-9), tokens=state.tokens,
                        elapsed_s=now - t0, data_wait_s=round(source.wait_s, 4))
            window_t, window_tokens = now, 0
            for c in callbacks:
                c.on_train_loss_report(info)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if validate is not None:
                validate(step)
            if early and state.bad_evals >= cfg.patience:
                state.stopped_early = True
        for c in callbacks:
            c.on_step_end(state)
        if state.stopped_early:
            break


def make_validate(model, cfg: TrainConfig, state: TrainState, tokens, labels, group,
                  callbacks: list[TrainingCallback]) -> Callable[[int], None]:
    """-> validate(step): the validation NLL of `tokens` (cfg.eval_batches batches), recorded in `state` and
    reported to the callbacks (info: the metrics row and "new_best")."""

    def validate(step: int) -> None:
        r = nll(model, tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches * cfg.batch_size, labels)
        # Every rank evaluates the same windows; rank 0's number decides, so all ranks decide alike.
        v = r["nll"] if group is None else dist.broadcast_floats([r["nll"]], group)[0]
        info = {"step": step, "valid_nll": r["nll"], "valid_ppl": r["ppl"], "valid_tokens": r["tokens"],
                "new_best": state.record_eval(step, v)}
        for c in callbacks:
            c.on_val_loss_report(info)

    return validate


def check_fits(model, cfg: TrainConfig, desc: str, log: Callable) -> None:
    """The run's windows fit the model's positions (the large model's, which the config load does not check),
    and its memory estimate fits the machine (mlx_pn.memory)."""
    max_pos = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    if max_pos and cfg.seq_len > max_pos:
        raise TrainingError(f"[{desc}] seq_len={cfg.seq_len} is longer than the model's max_position_embeddings="
                            f"{max_pos}; lower pretrain/finetune.seq_len or raise model/large.max_position_embeddings")
    memory.check_training(model, cfg, desc, log)


def _keep_final(model, out: Path, run: RunOptions, group, early: bool, main: bool) -> None:
    """final/: the best validation weights when early stopping is on (on every rank), else the last ones."""
    if early and main and (out / "best").exists():
        # load_weights, not load_model: `model` may be any of the methods' models, not only a Transformer
        model.load_weights(str(out / "best" / "model.safetensors"), strict=True)
        mx.eval(model.parameters())
    if group is not None and early:
        model.update(dist.broadcast(model.parameters(), group))  # the best weights on every rank
        mx.eval(model.parameters())
    if main:
        save_model(out / "final", model, run.extra_config)


def _quiet(*_a, **_k) -> None:
    pass
