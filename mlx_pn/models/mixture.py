"""SLM-mix: the hard mixture, k independent small Transformers, one per generic-data cluster (paper §2.6).

Nothing is shared (attention included): each expert *is* an SLM, pretrained by the one training loop
on the windows of its own cluster only. The experts are embarrassingly parallel: each has its own
folder, so k processes (or machines) can each train one (`python -m recipes.pretrain --method slm-mix
--expert i`); by default they are trained one after another. Specialization picks one expert
(`select_expert`: most-frequent, best-loss, or all = fine-tune every one and keep the best) and
fine-tunes it like an SLM (the paper's Table 5).

Layout: ROOT/expert-XX/{checkpoints, metrics.jsonl, final/}, ROOT/summary.json once all are done.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_pn.models.transformer import Transformer
from mlx_pn.train.checkpoint import load_model


def expert_dir(root: str | Path, i: int) -> Path:
    return Path(root) / f"expert-{i:02d}"


def expert_windows(labels: np.ndarray, n_windows: int, i: int) -> np.ndarray:
    """Indices of the windows (of a PackedBatches stream with n_windows windows) in cluster i."""
    return np.flatnonzero(np.asarray(labels)[:n_windows] == i)


def expert_steps(total_steps: int, k: int, per_expert: int = 0) -> int:
    """Per-expert steps: `per_expert` if set, else an even split of the SLM budget (same total cost)."""
    return per_expert or max(1, total_steps // k)


class HardMixture(nn.Module):
    """k experts; (tokens (B, L), cluster (B,)) -> logits (B, L, V) of each sequence's own expert.

    Runs every expert on every sequence (k times an SLM's cost): for evaluation and tests only; the
    deployed model is one expert (`specialize`).
    """

    def __init__(self, experts: list[Transformer]):
        super().__init__()
        self.experts = experts

    def __call__(self, inputs: mx.array, cluster: mx.array) -> mx.array:
        logits = mx.stack([e(inputs) for e in self.experts])  # (k, B, L, V)
        return logits[cluster, mx.arange(inputs.shape[0])]  # (B, L, V)

    def specialize(self, i: int) -> Transformer:
        """A copy of expert i (MLX arrays are immutable: fine-tuning it leaves the mixture untouched)."""
        slm = Transformer(self.experts[i].args)
        slm.update(self.experts[i].parameters())
        mx.eval(slm.parameters())
        return slm


def load_expert(root: str | Path, i: int) -> Transformer:
    """Expert i's final weights; FileNotFoundError naming the command that trains it."""
    folder = expert_dir(root, i) / "final"
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} does not exist: train it with `python -m recipes.pretrain --method slm-mix "
                                f"--expert {i}` (or without --expert to train all experts)")
    return load_model(folder)


def load_mixture(root: str | Path, k: int) -> HardMixture:
    return HardMixture([load_expert(root, i) for i in range(k)])
