"""SLM-mix: the hard mixture, k independent small Transformers, one per generic-data cluster (paper §2.6).

Nothing is shared (attention included): each expert *is* an SLM, pretrained by the one training loop
on the windows of its own cluster only. The experts are embarrassingly parallel: each has its own
folder, so k processes (or machines) can each train one (`mlx-pn pretrain --method slm-mix
--expert i`); by default they are trained one after another. Specialization picks one expert
(most-frequent, best-loss, or all = fine-tune every one and keep the best) and
fine-tunes it like an SLM (the paper's Table 5).

Training, layout and selection: mlx_pn.methods.routed (ROOT/expert-XX/ per expert).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_pn.models.transformer import Transformer


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
