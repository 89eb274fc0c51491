"""THE training loop, used by every recipe (pretraining, fine-tuning, and every method).

One compiled step carries ``[model.state, optimizer.state, mx.random.state]``; micro-batches for
gradient accumulation are unrolled inside it. The loss and the batches are arguments, so methods
differ by a loss function or a batch source, never by a copy of this loop.

Files under ``out_dir``: ``checkpoints/step_*/`` (resumable, hash-checked), ``metrics.jsonl``
(one JSON object per log/eval line), ``best/`` (early stopping: the best validation weights) and
``final/`` (the weights this run ends with: the best ones when early stopping is on).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map
from tqdm import tqdm

from mlx_pn.config import TrainConfig, to_dict
from mlx_pn.data.batches import PackedBatches, Prefetcher
from mlx_pn.evaluate import nll
from mlx_pn.io import write_json_atomic
from mlx_pn.train.checkpoint import latest_good_checkpoint, restore_checkpoint, save_checkpoint, save_model
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.optim import current_lr, make_optimizer


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    best_valid_nll: float | None
    best_step: int | None
    stopped_early: bool
    tokens: int
    wall_s: float
    history: list[dict] = field(default_factory=list)


class MetricsLog:
    """Append-only JSONL; on resume, lines past the checkpoint's step are dropped (they will recur)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            path.write_text("".join(k + "\n" for k in keep))

    def write(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]


def make_step(model, optimizer, loss_fn, micro_batches: int, grad_clip: float, compile: bool):
    """-> step(batch (A, B, L + 1) int32, *extras (A, B, ...)) -> (mean loss, grad norm before clipping).

    Extras (e.g. cluster ids) are sliced per micro-batch like the tokens: loss_fn(model, x, y, *extras[a]).
    """
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def step(batch, *extras):
        loss_sum, grads = None, None
        for a in range(micro_batches):  # unrolled at trace time: A is a Python int
            x, y = batch[a, :, :-1], batch[a, :, 1:]
            loss, g = loss_and_grad(model, x, y, *(e[a] for e in extras))
            loss_sum = loss if loss_sum is None else loss_sum + loss
            grads = g if grads is None else tree_map(mx.add, grads, g)
        if micro_batches > 1:
            grads = tree_map(lambda g: g / micro_batches, grads)
        if grad_clip > 0:
            grads, gnorm = optim.clip_grad_norm(grads, grad_clip)
        else:
            gnorm = mx.sqrt(sum(mx.sum(g.astype(mx.float32) ** 2) for g in _leaves(grads)))
        optimizer.update(model, grads)
        return loss_sum / micro_batches, gnorm

    return partial(mx.compile, inputs=state, outputs=state)(step) if compile else step


def _leaves(tree):
    from mlx.utils import tree_flatten

    return [v for _, v in tree_flatten(tree)]


def train(model, cfg: TrainConfig, batches: PackedBatches, out_dir: str | Path, *,
          valid_tokens: np.ndarray | None = None, valid_labels: np.ndarray | None = None,
          loss_fn: Callable = cross_entropy, resume: bool = True, desc: str = "train",
          extra_config: dict | None = None, log: Callable = print) -> TrainResult:
    """Train `model` in place for cfg.steps (or until early stopping) and write `out_dir`.

    `batches.batch(step, A)` gives (A, B, L + 1) tokens, or a tuple (tokens, *extras) whose extras reach
    `loss_fn(model, x, y, *extras)`. valid_tokens: a 1-D split or (N, L + 1) windows; valid_labels: their
    per-window cluster ids (for models called as model(x, ids)).
    """
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    start, trainer = 0, {"best_valid_nll": None, "best_step": None, "bad_evals": 0, "tokens": 0}
    found = latest_good_checkpoint(ckpt_root) if resume else None
    if found:
        path, state = found
        restore_checkpoint(path, model, optimizer)
        start, trainer = state["step"], state["trainer"]
        log(f"[{desc}] resuming from {path} (step {start})")
    # MLX 0.32 cannot restore an arbitrary RNG state, so the generator is re-seeded from (seed, step):
    # any randomness in a loss (none in the built-in ones) is then a function of where training is.
    mx.random.seed(cfg.seed * 1_000_003 + start)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_config.json", to_dict(cfg))
    metrics = MetricsLog(out / "metrics.jsonl", start if found else None)
    step_fn = make_step(model, optimizer, loss_fn, cfg.grad_accum, cfg.grad_clip, cfg.compile)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    use_early_stop = cfg.patience > 0 and valid_tokens is not None

    def evaluate_now(step: int) -> float | None:
        if valid_tokens is None:
            return None
        r = nll(model, valid_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches * cfg.batch_size, valid_labels)
        metrics.write(step=step, valid_nll=r["nll"], valid_ppl=r["ppl"], valid_tokens=r["tokens"])
        best = trainer["best_valid_nll"]
        if best is None or r["nll"] < best - 1e-6:
            trainer.update(best_valid_nll=r["nll"], best_step=step, bad_evals=0)
            if use_early_stop:
                save_model(out / "best", model, extra_config)
        else:
            trainer["bad_evals"] += 1
        return r["nll"]

    if start == 0 and valid_tokens is not None and not found:
        evaluate_now(0)  # the "before training" point of every curve

    last_ckpt = found[0] if found else None
    pf = Prefetcher(lambda i: batches.batch(i, cfg.grad_accum), start, cfg.steps)
    t0, window_t, window_tokens, loss_val = time.perf_counter(), time.perf_counter(), 0, float("nan")
    stopped_early, step = False, start
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=False)
    try:
        for step in range(start + 1, cfg.steps + 1):
            i, batch = pf.get()
            arrays = batch if isinstance(batch, tuple) else (batch,)
            loss, gnorm = step_fn(*(mx.array(a) for a in arrays))
            mx.eval(loss, gnorm, model.state, optimizer.state)
            loss_val = loss.item()
            trainer["tokens"] += tokens_per_step
            window_tokens += tokens_per_step
            if not math.isfinite(loss_val):
                raise TrainingError(
                    f"[{desc}] non-finite loss {loss_val} at step {step} (batch index {i}); last good checkpoint: "
                    f"{last_ckpt or 'none'}. Lower the learning rate or check the data, then resume.")
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                metrics.write(step=step, loss=loss_val, lr=current_lr(optimizer), grad_norm=gnorm.item(),
                              tokens_per_s=tps, tokens=trainer["tokens"], elapsed_s=now - t0)
                bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tps:,.0f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                v = evaluate_now(step)
                if v is not None:
                    bar.write(f"[{desc}] step {step}: loss {loss_val:.4f}, valid ppl {math.exp(v):.2f}")
                if use_early_stop and trainer["bad_evals"] >= cfg.patience:
                    stopped_early = True
            if step % cfg.save_every == 0 or step == cfg.steps or stopped_early:
                last_ckpt = save_checkpoint(ckpt_root, step, model, optimizer, trainer, cfg.keep_checkpoints)
            if stopped_early:
                bar.write(f"[{desc}] early stop at step {step}: no improvement in {cfg.patience} evaluations; "
                          f"keeping step {trainer['best_step']}")
                break
    finally:
        pf.close()
        bar.close()

    if use_early_stop and (out / "best").exists():
        # load_weights, not load_model: `model` may be any of the methods' models, not only a Transformer
        model.load_weights(str(out / "best" / "model.safetensors"), strict=True)
        mx.eval(model.parameters())
    save_model(out / "final", model, extra_config)
    result = TrainResult(steps=step, final_loss=loss_val, best_valid_nll=trainer["best_valid_nll"],
                         best_step=trainer["best_step"], stopped_early=stopped_early, tokens=trainer["tokens"],
                         wall_s=time.perf_counter() - t0, history=metrics.rows())
    summary = {k: v for k, v in result.__dict__.items() if k != "history"}
    write_json_atomic(out / "summary.json", summary)
    return result
