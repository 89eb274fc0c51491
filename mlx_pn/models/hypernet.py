"""SLM-hn: a hypernetwork generates the projection coefficients of the projected network.

The v1 paper's SLM-hn is unspecified (input, architecture); this is the reading of v2, "a
hyper-network whose secondary network is a cluster-conditioned linear projection": a small MLP maps a
cluster histogram (k,) to the per-layer coefficients alpha (Nl, h) over the same basis tensors T as
slm-pn (mlx_pn.models.projected). Pretraining feeds each sequence's own cluster as a one-hot input;
specialization feeds the domain's whole histogram and materialises one plain `Transformer`:

    model = build_projected(args, ProjectedArgs(k=16, coefficients="hypernet"))
    slm = model.specialize(histogram)          # (k,) -> Transformer

Shapes: B batch, k clusters, Hh hidden width, Nl layers, h basis size.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class HyperNetwork(nn.Module):
    """cond (B,) ids (one-hot) or (B, k) histograms -> alpha (Nl, B, h): out(silu(in(hist))).

    k clusters, h basis matrices per MLP matrix, `hidden` units (Hh), num_layers (Nl) layers."""

    def __init__(self, k: int, h: int, hidden: int, num_layers: int):
        super().__init__()
        self.k, self.num_layers, self.h = k, num_layers, h
        self.in_proj = nn.Linear(k, hidden)
        self.out_proj = nn.Linear(hidden, num_layers * h)

    def init_weights(self, shared: float = 0.0) -> None:
        # Same target as slm-pn's codes: for a one-hot input, Var(alpha_r) = 1/h so that each generated
        # W = sum_r alpha_r T_r has the trunk's init scale. in_proj ~ N(0, 1) (one-hot inputs pick a column);
        # out_proj is scaled by the measured second moment of the hidden units.
        # The experts already share a component: silu's mean over N(0, 1) inputs is ~0.21 (second moment
        # ~0.36), so two clusters' hidden vectors, hence their alphas, have cosine ~0.12 at init.
        # shared = rho (projected.code_shared, as slm-pn's codes): alpha = sqrt(1 - rho) out(hidden) + sqrt(rho) b
        # with b ~ N(0, 1/h) the output bias, shared by every cluster: cosine ~rho + (1 - rho) 0.12, the same
        # scale. rho = 0 is the draw above, bit for bit.
        Hh = self.in_proj.weight.shape[0]
        self.in_proj.weight = mx.random.normal(self.in_proj.weight.shape)
        self.in_proj.bias = mx.zeros_like(self.in_proj.bias)
        z2 = mx.mean(nn.silu(self.in_proj.weight) ** 2).item()
        self.out_proj.weight = mx.random.normal(self.out_proj.weight.shape) * (Hh * z2 * self.h) ** -0.5
        self.out_proj.bias = mx.zeros_like(self.out_proj.bias)
        if shared > 0:
            self.out_proj.weight = self.out_proj.weight * (1 - shared) ** 0.5
            # one draw, the same in every layer, scaled to its expected norm sqrt(rho) (as slm-pn's shared code)
            b = mx.random.normal((self.h,))
            b = b * (shared**0.5 / mx.maximum(mx.linalg.norm(b), 1e-12))
            self.out_proj.bias = mx.tile(b, (self.num_layers,))

    def __call__(self, cond: mx.array) -> mx.array:
        """(B,) ids / (B, k) histograms -> (Nl, B, h); a scalar id / (k,) histogram -> (Nl, h)."""
        x = mx.eye(self.k)[cond] if mx.issubdtype(cond.dtype, mx.integer) else cond.astype(mx.float32)
        a = self.out_proj(nn.silu(self.in_proj(x)))  # ([B,] Nl * h)
        if a.ndim == 1:
            return a.reshape(self.num_layers, self.h)
        return a.reshape(-1, self.num_layers, self.h).transpose(1, 0, 2)  # (Nl, B, h)
