"""The compiled training step: one optimizer update from a batch of A micro-batches (the loop's inner work).

The step carries ``[model.state, optimizer.state, mx.random.state]`` through ``mx.compile``; micro-batches for
gradient accumulation are unrolled inside it. The loss is an argument, so methods differ by a loss function,
never by a copy of this step. Shapes: A micro-batches per step (grad_accum), B rows per micro-batch, L tokens
per row (seq_len).
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from mlx_pn.train import distributed as dist


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
