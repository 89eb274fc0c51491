"""AdamW with PyTorch-style bias correction, warm-up + cosine, and no decay on norms/embeddings."""

from __future__ import annotations

import mlx.optimizers as optim

from mlx_pn.config import TrainConfig


def lr_schedule(cfg: TrainConfig):
    """Linear warm-up 0 -> lr over `warmup` steps, then cosine lr -> min_lr until `steps`."""
    warmup = min(cfg.warmup, max(cfg.steps - 1, 0))
    decay = optim.cosine_decay(cfg.lr, max(cfg.steps - warmup, 1), cfg.min_lr)
    if warmup == 0:
        return decay
    return optim.join_schedules([optim.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def no_decay(path: str, _param) -> bool:
    """Norm gains and embeddings are not decayed (decay would pull gains to 0 / rare tokens to 0)."""
    return "norm" in path or "embed" in path or path.endswith("bias")


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """Two AdamW groups on one schedule: no weight decay on the `no_decay` parameters, cfg.weight_decay elsewhere."""
    schedule = lr_schedule(cfg)
    kw = dict(learning_rate=schedule, betas=[cfg.beta1, cfg.beta2], eps=cfg.eps, bias_correction=True)
    return optim.MultiOptimizer(
        [optim.AdamW(weight_decay=0.0, **kw), optim.AdamW(weight_decay=cfg.weight_decay, **kw)],
        [no_decay],
    )


def current_lr(opt: optim.Optimizer) -> float:
    """The learning rate the last update used (both groups share one schedule)."""
    inner = opt.optimizers[0] if isinstance(opt, optim.MultiOptimizer) else opt
    return float(inner.learning_rate)
