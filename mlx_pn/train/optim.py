"""AdamW with PyTorch-style bias correction, warm-up + cosine, and no decay on norms/embeddings.

A model may scale its own parameters' steps: `model.update_scales()` -> {parameter path: multiplier} (the
projected network's basis tensors: 1 / ||alpha||_1, so that a materialised expert moves at the slm's rate;
mlx_pn.models.projected). The Adam step of those parameters is multiplied, their weight decay is not. A model
without the hook (or returning {}) gets exactly the plain AdamW update.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

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


class ScaledAdamW(optim.AdamW):
    """AdamW whose Adam step is multiplied per parameter by `self.scales` ({path: scalar}, set before each
    update by ScaledMultiOptimizer); decay stays p * (1 - lr * wd). No scales: AdamW's own update, bit for bit."""

    scales: dict = {}

    def apply_gradients(self, gradients: dict, parameters: dict):
        if not self.scales:
            return super().apply_gradients(gradients, parameters)
        if not self._initialized:
            self.init(gradients)
        for param, scheduler in self._schedulers.items():
            self.state[param] = scheduler(self.step)
        self.state["step"] = self.step + 1
        scales = tree_unflatten([(k, self.scales.get(k)) for k, _ in tree_flatten(gradients)])
        return tree_map(self._apply_scaled, gradients, parameters, self.state, scales)

    def _apply_scaled(self, gradient, parameter, state, scale):
        if scale is None:
            return self.apply_single(gradient, parameter, state)
        decayed = parameter * (1 - self.learning_rate.astype(gradient.dtype) * self.weight_decay)
        stepped = optim.Adam.apply_single(self, gradient, decayed, state)
        return decayed + scale.astype(gradient.dtype) * (stepped - decayed)


class ScaledMultiOptimizer(optim.MultiOptimizer):
    """MultiOptimizer that asks the model for its step multipliers (update_scales) at every update."""

    def update(self, model, gradients: dict):
        scales = model.update_scales() if hasattr(model, "update_scales") else {}
        for o in self.optimizers:
            o.scales = scales
        model.update(self.apply_gradients(gradients, model))


def make_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    """Two AdamW groups on one schedule: no weight decay on the `no_decay` parameters, cfg.weight_decay elsewhere;
    a model's update_scales() multiply its parameters' Adam steps (see the module's docstring)."""
    schedule = lr_schedule(cfg)
    kw = dict(learning_rate=schedule, betas=[cfg.beta1, cfg.beta2], eps=cfg.eps, bias_correction=True)
    return ScaledMultiOptimizer(
        [ScaledAdamW(weight_decay=0.0, **kw), ScaledAdamW(weight_decay=cfg.weight_decay, **kw)],
        [no_decay],
    )


def current_lr(opt: optim.Optimizer) -> float:
    """The learning rate the last update used (both groups share one schedule)."""
    inner = opt.optimizers[0] if isinstance(opt, optim.MultiOptimizer) else opt
    return float(inner.learning_rate)
