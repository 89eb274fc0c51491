"""THE training loop, used by every recipe (pretraining, fine-tuning, and every method).

One compiled step carries ``[model.state, optimizer.state, mx.random.state]``; micro-batches for
gradient accumulation are unrolled inside it. The loss and the batches are arguments, so methods
differ by a loss function or a batch source, never by a copy of this loop.

Where a run is (step, early-stopping bookkeeping, token count, last loss) is one :class:`TrainState`,
saved whole in every checkpoint and, in a data-parallel run, broadcast whole from rank 0.

Files under ``out_dir``: ``train_config.json``, ``checkpoints/step_*/`` (resumable, hash-checked),
``metrics.jsonl`` (one JSON object per log/eval line), ``best/`` (early stopping: the best validation
weights) and ``final/`` (the weights this run ends with: the best ones when early stopping is on). The
run's summary is not written here: :meth:`TrainResult.summary` gives it to the caller, who adds the stage's
cost and writes it once.

Data parallel (launched with ``mlx.launch``; mlx_pn.train.distributed): each rank reads its rows of every global
batch, the step averages gradients over ranks, and only rank 0 writes files or prints.

Shapes: A micro-batches per step (grad_accum), B rows per micro-batch, L tokens per row (seq_len).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map
from tqdm import tqdm

from mlx_pn.config import TrainConfig, to_dict
from mlx_pn.data.batches import PackedBatches, Prefetcher
from mlx_pn import runlock
from mlx_pn.fingerprint import array_sha256, batches_keys, check_same, model_keys, train_keys
from mlx_pn import interrupt, memory
from mlx_pn.io import write_json_atomic, write_text_atomic
from mlx_pn.models.build import CheckpointError, save_model
from mlx_pn.train import distributed as dist
from mlx_pn.train.checkpoint import latest_good_checkpoint, restore_checkpoint, save_checkpoint
from mlx_pn.train.evaluate import nll
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.optim import current_lr, make_optimizer


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


def _row_step(line: str) -> float:
    """The step of a metrics line; a torn last line (a crash mid-append) counts as past any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


class MetricsLog:
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


COMPUTE_DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}
# fp16's 5 exponent bits flush small activation gradients to 0: the loss is multiplied by this before the
# backward pass and the fp32 gradients divided by it after (static loss scaling; bf16 needs none)
FP16_LOSS_SCALE = 1024.0


def compute_dtype(precision: str) -> mx.Dtype:
    """train.precision -> the step's compute dtype; auto = bf16 on a GPU (Metal or CUDA), fp32 on a CPU (MLX's CPU
    bf16 matmul has no BLAS behind it: slower than fp32, docs/platform.md section 1)."""
    if precision == "auto":
        gpu = mx.default_device() == mx.gpu and (mx.metal.is_available() or mx.cuda.is_available())
        precision = "bf16" if gpu else "fp32"
    return COMPUTE_DTYPES[precision]


def mixed_value_and_grad(model, loss_fn, dtype: mx.Dtype):
    """nn.value_and_grad for a `dtype` forward/backward over fp32 master weights -> f(model, *args) ->
    (fp32 loss, fp32 gradients of model.trainable_parameters()).

    The model's floating parameters stay fp32 (what the optimizer updates and checkpoints save); each call casts
    them to `dtype`, runs loss_fn on that copy (the losses take logits to fp32; RMSNorm and attention accumulate
    in fp32 inside mx.fast), and the cast's vjp brings the gradients back to fp32 (docs/platform.md section 3)."""
    scale = FP16_LOSS_SCALE if dtype == mx.float16 else 1.0

    def low(p):
        return p.astype(dtype) if p.dtype == mx.float32 else p

    def scaled_loss(params, *args):
        model.update(tree_map(low, params))
        return loss_fn(model, *args).astype(mx.float32) * scale

    grad_fn = mx.value_and_grad(scaled_loss)

    def f(model, *args):
        master = model.trainable_parameters()
        loss, grads = grad_fn(master, *args)
        model.update(master)  # the fp32 master weights back in the model: the optimizer updates those
        if scale != 1.0:
            loss, grads = loss / scale, tree_map(lambda g: g / scale, grads)
        return loss, grads

    return f


def make_step(model, optimizer, loss_fn, micro_batches: int, grad_clip: float, compile: bool, group=None,
              dtype: mx.Dtype = mx.float32):
    """-> step(batch (A, B, L + 1) int32, *extras (A, B, ...)) -> (mean loss (), grad norm before clipping ()).

    Extras (e.g. cluster ids) are sliced per micro-batch like the tokens: loss_fn(model, x, y, *extras[a]).
    group: an mx.distributed.Group of data-parallel ranks (None: this process alone); gradients and the returned
    loss are averaged over it before clipping and the update, so every rank applies the same update.
    dtype: the forward/backward compute dtype (compute_dtype(cfg.precision)); weights, gradients and the optimizer
    state stay fp32 whatever it is.
    """
    if dtype == mx.float32:
        loss_and_grad = nn.value_and_grad(model, loss_fn)
    else:
        loss_and_grad = mixed_value_and_grad(model, loss_fn, dtype)
    state = [model.state, optimizer.state, mx.random.state]

    def step(batch, *extras):
        loss_sum, grads = None, None
        for a in range(micro_batches):  # unrolled at trace time: A is a Python int
            x, y = batch[a, :, :-1], batch[a, :, 1:]  # (B, L) inputs, (B, L) next-token targets
            loss, g = loss_and_grad(model, x, y, *(e[a] for e in extras))
            loss_sum = loss if loss_sum is None else loss_sum + loss
            grads = g if grads is None else tree_map(mx.add, grads, g)
        if micro_batches > 1:
            grads = tree_map(lambda g: g / micro_batches, grads)
        grads = dist.average(grads, group)  # all-reduce (mean) over data-parallel ranks; no-op alone
        loss_sum = dist.mean_scalar(loss_sum, group)
        gnorm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))
        if grad_clip > 0:
            # = optim.clip_grad_norm, without its per-element `where` (slow on MLX's CPU backend): one scalar
            # factor, which mx.compile fuses into the optimizer's update kernel
            scale = mx.minimum(grad_clip / (gnorm + 1e-6), 1.0)
            grads = tree_map(lambda g: g * scale.astype(g.dtype), grads)
        optimizer.update(model, grads)
        return loss_sum / micro_batches, gnorm

    return partial(mx.compile, inputs=state, outputs=state)(step) if compile else step


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


def train(model, cfg: TrainConfig, batches: PackedBatches, out_dir: str | Path, *, resume: bool = True,
          log: Callable = print, group=None, **kw) -> TrainResult:
    """_train (below: the arguments) holding the run lock of `out_dir` (rank 0; mlx_pn.runlock), after moving a
    previous run's files aside when `resume` is False, so its checkpoints are never resumed later."""
    main = dist.resolve(group)[1] == 0
    with runlock.hold(out_dir, log, enabled=main):
        if not resume and main and any((Path(out_dir) / n).exists() for n in ("checkpoints", "final")):
            runlock.set_aside(out_dir, RUN_FILES, log)
        return _train(model, cfg, batches, out_dir, resume=resume, log=log, group=group, **kw)


def _train(model, cfg: TrainConfig, batches: PackedBatches, out_dir: str | Path, *,
           valid_tokens: np.ndarray | None = None, valid_labels: np.ndarray | None = None,
           loss_fn: Callable = cross_entropy, resume: bool = True, desc: str = "train",
           extra_config: dict | None = None, log: Callable = print, group=None,
           fingerprint: dict | None = None) -> TrainResult:
    """Train `model` in place for budget(cfg, batches) steps (or until early stopping) and write `out_dir`.

    `batches.batch(step, A)` gives (A, B, L + 1) tokens, or a tuple (tokens, *extras) whose extras reach
    `loss_fn(model, x, y, *extras)`. valid_tokens: a 1-D split or (N, L + 1) windows; valid_labels: their
    (N,) per-window cluster ids (for models called as model(x, ids)).

    group: None = the ranks this process was launched with (data parallel; a single process without a launcher),
    dist.SOLO = this process alone (e.g. one slm-mix expert per rank), or an mx.distributed.Group. cfg.batch_size
    is the global batch: each of n ranks computes batch_size / n of its rows.
    fingerprint: keys of the caller's added to run_fingerprint's; a checkpoint made with another fingerprint is
    not resumed (StaleRunError listing the keys that differ).
    """
    group, rank, world_size = dist.resolve(group)
    main = rank == 0
    cfg, cap = budget(cfg, batches)  # cfg.steps: the planned steps from here on
    if not main:
        log = _quiet
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    max_pos = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    if max_pos and cfg.seq_len > max_pos:  # the large model's, which the config load does not check
        raise TrainingError(f"[{desc}] seq_len={cfg.seq_len} is longer than the model's max_position_embeddings="
                            f"{max_pos}; lower pretrain/finetune.seq_len or raise model/large.max_position_embeddings")
    memory.check_training(model, cfg, desc, log)  # before the optimizer state: refused with the numbers
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    state = TrainState()
    fp = run_fingerprint(model, cfg, batches, valid_tokens, valid_labels, fingerprint) if main else {}
    found = latest_good_checkpoint(ckpt_root) if resume and main else None
    if found:
        path, saved = found
        _check_steps(path, saved, cfg, desc)
        restore_checkpoint(path, model, optimizer)  # another shape: a CheckpointError naming the folder
        _check_resumable(path, saved, cfg, fp, desc)
        state = TrainState.from_dict(saved["trainer"] | {"step": saved["step"]})
        log(f"[{desc}] resuming from {path} (step {state.step})")
    resumed, last_ckpt = bool(found), (found[0] if found else None)
    if group is not None:  # rank 0's weights, optimizer state and position everywhere (no shared disk needed)
        state, resumed = _sync_state(model, optimizer, state, resumed, group)
    start = state.step
    interrupt.note(desc, start, last_ckpt)
    # MLX 0.32 cannot restore an arbitrary RNG state, so the generator is re-seeded from (seed, step):
    # any randomness in a loss (none in the built-in ones) is then a function of where training is.
    mx.random.seed(cfg.seed * 1_000_003 + start)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", to_dict(cfg) | ({"data_parallel_ranks": world_size}
                                                                     if world_size > 1 else {}))
    metrics = MetricsLog(out / "metrics.jsonl", start if resumed else None) if main else _NoMetrics()
    step_fn = make_step(model, optimizer, loss_fn, cfg.grad_accum, cfg.grad_clip, cfg.compile, group,
                        compute_dtype(cfg.precision))
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    use_early_stop = cfg.patience > 0 and valid_tokens is not None

    def evaluate_now(step: int) -> float | None:
        """Validation NLL at `step` (logged; None without a validation split), recorded in `state`."""
        if valid_tokens is None:
            return None
        r = nll(model, valid_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches * cfg.batch_size, valid_labels)
        metrics.write(step=step, valid_nll=r["nll"], valid_ppl=r["ppl"], valid_tokens=r["tokens"])
        # Every rank evaluates the same windows; rank 0's number decides, so all ranks decide alike.
        v = r["nll"] if group is None else dist.broadcast_floats([r["nll"]], group)[0]
        if state.record_eval(step, v) and use_early_stop and main:
            save_model(out / "best", model, extra_config)
        return r["nll"]

    if start == 0 and valid_tokens is not None and not resumed:
        evaluate_now(0)  # the "before training" point of every curve

    pf = Prefetcher(dist.sharded_source(batches, cfg.grad_accum, rank, world_size), start, cfg.steps)
    t0, window_t, window_tokens = time.perf_counter(), time.perf_counter(), 0
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=False,
               disable=not main)
    say = bar.write if main else _quiet  # tqdm.write prints even from a disabled bar
    try:
        for step in range(start + 1, cfg.steps + 1) if not state.stopped_early else ():
            i, batch = pf.get()
            arrays = batch if isinstance(batch, tuple) else (batch,)  # tokens (A, B, L + 1), *extras (A, B, ...)
            loss, gnorm = step_fn(*(mx.array(a) for a in arrays))
            mx.eval(loss, gnorm, model.state, optimizer.state)
            state.step, state.last_loss = step, loss.item()
            interrupt.note(desc, step, last_ckpt)  # what Ctrl-C / SIGTERM report (recipes' clear_errors)
            state.tokens += tokens_per_step
            window_tokens += tokens_per_step
            if not math.isfinite(state.last_loss):
                raise TrainingError(
                    f"[{desc}] non-finite loss {state.last_loss} at step {step} (batch index {i}); last good "
                    f"checkpoint: {last_ckpt or 'none'}. Lower the learning rate or check the data, then resume.")
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                metrics.write(step=step, loss=state.last_loss, lr=current_lr(optimizer), grad_norm=gnorm.item(),
                              tokens_per_s=tps, tokens=state.tokens, elapsed_s=now - t0,
                              data_wait_s=round(pf.wait_s, 4))
                bar.set_postfix(loss=f"{state.last_loss:.3f}", tok_s=f"{tps:,.0f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                v = evaluate_now(step)
                if v is not None:
                    say(f"[{desc}] step {step}: loss {state.last_loss:.4f}, valid ppl {math.exp(v):.2f}")
                if use_early_stop and state.bad_evals >= cfg.patience:
                    state.stopped_early = True
            if (step % cfg.save_every == 0 or step == cfg.steps or state.stopped_early) and main:
                last_ckpt = save_checkpoint(ckpt_root, step, model, optimizer, asdict(state), cfg.keep_checkpoints,
                                            fingerprint=fp)
            interrupt.note(desc, step, last_ckpt)
            if state.stopped_early:
                say(f"[{desc}] early stop at step {step}: no improvement in {cfg.patience} evaluations; "
                    f"keeping step {state.best_step}")
                break
    finally:
        pf.close()
        bar.close()

    if use_early_stop and main and (out / "best").exists():
        # load_weights, not load_model: `model` may be any of the methods' models, not only a Transformer
        model.load_weights(str(out / "best" / "model.safetensors"), strict=True)
        mx.eval(model.parameters())
    if group is not None and use_early_stop:
        model.update(dist.broadcast(model.parameters(), group))  # the best weights on every rank
        mx.eval(model.parameters())
    if main:
        save_model(out / "final", model, extra_config)
    # A run resumed from its last checkpoint trains no step: it reports the loss that checkpoint recorded.
    final_loss = math.nan if state.last_loss is None else state.last_loss
    result = TrainResult(steps=state.step, final_loss=final_loss, best_valid_nll=state.best_valid_nll,
                         best_step=state.best_step, stopped_early=state.stopped_early, tokens=state.tokens,
                         wall_s=time.perf_counter() - t0, data_wait_s=pf.wait_s, planned_steps=cfg.steps,
                         fingerprint=fp,
                         stopped_by="early stopping" if state.stopped_early else cap, history=metrics.rows())
    log(f"[{desc}] stopped by {result.stopped_by} at step {state.step} of {cfg.steps} planned"
        + (f" ({batches.epochs(state.step, cfg.grad_accum):.2f} epochs)" if hasattr(batches, "epochs") else "")
        + ("" if state.best_step is None else f"; best validation at step {state.best_step}"))
    interrupt.done()
    dist.barrier(group)  # no rank leaves before rank 0 has written the final model
    return result


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


def _quiet(*_a, **_k) -> None:
    pass


class _NoMetrics:
    """MetricsLog stand-in on ranks other than 0 (they write nothing)."""

    def write(self, **row) -> None:
        pass

    def rows(self) -> list[dict]:
        return []


def _sync_state(model, optimizer, state: TrainState, resumed: bool, group) -> tuple[TrainState, bool]:
    """Start or resume of a data-parallel run: rank 0's parameters, optimizer state and TrainState on every rank
    (parameters and optimizer state updated in place) -> (rank 0's TrainState, whether rank 0 resumed)."""
    model.update(dist.broadcast(model.parameters(), group))
    optimizer.state = dist.broadcast(optimizer.state, group)
    mx.eval(model.parameters(), optimizer.state)
    got = dist.broadcast_json({"state": asdict(state), "resumed": resumed}, group)
    return TrainState.from_dict(got["state"]), got["resumed"]
