"""SLM-pn: a projected network, one small model per cluster with most parameters shared (paper §2.5).

Only the MLPs are projected; attention, norms and embeddings are the trunk's and shared by every
expert. For layer l and cluster (expert) i, each MLP matrix is a combination of h basis matrices:

    alpha(l, i) = E[i] @ M(l)                       (h,)   E: (k, m) codes, M(l): (m, h) mixing
    W(l, i)     = sum_r alpha(l, i)_r * T(l)[r]     (out, in)   T(l): (h, out, in), one per gate/up/down

h = k, E = I, M(l) = I is the hard mixture (k independent MLPs on a shared trunk). Training routes
each sequence by its own cluster; `specialize` materialises one expert as a plain `Transformer`
(the SLM: same shapes, same cost, exports to mlx-lm unchanged). Where the coefficients come from is
a small module: `ClusterCodes` (E, M: slm-pn) or a hypernetwork (mlx_pn.models.hypernet: slm-hn).

Shapes: B batch, L sequence length, D hidden, F MLP inner, h basis size, m code size, k clusters,
Nl layers. A condition `cond` is (B,) int cluster ids or (B, k) float cluster histograms (one expert
per sequence), or a scalar id / (k,) histogram (one expert for the whole batch: grouped batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_pn.models.hypernet import HyperNetwork
from mlx_pn.models.ops import swiglu_silu
from mlx_pn.models.transformer import Args, LlamaModel, ModelArgs, Transformer, init_trunk_weights


@dataclass
class ProjectedArgs(Args):
    """k experts (= clusters), m code size, h basis matrices per MLP matrix (0 = k)."""

    k: int = 16
    m: int = 0
    h: int = 0
    coefficients: str = "codes"  # "codes": alpha = E[i] @ M(l) (slm-pn) | "hypernet": an MLP (slm-hn)
    hypernet_hidden: int = 64  # width of the hypernetwork's hidden layer (slm-hn only)
    code_shared: float = 0.0  # rho: share of each expert's init coefficients that is common to all experts
    match_lr: bool = False  # update_scales(): each basis step / ||alpha||_1 (an expert's W moves at the slm's rate)
    coef_lr: float = 1.0  # update_scales(): the coefficients' (codes, mixing, hypernetwork) step multiplier;
    # 0 = matched: 1 / sqrt(the width alpha is summed over: m for the codes, hypernet_hidden for the hypernetwork)

    def __post_init__(self):
        self.m = self.m or self.k
        self.h = self.h or self.k
        if min(self.k, self.m, self.h) < 1:
            raise ValueError(f"projected args must be >= 1, got k={self.k} m={self.m} h={self.h}")
        if self.coefficients not in ("codes", "hypernet"):
            raise ValueError(f"projected coefficients must be 'codes' or 'hypernet', got {self.coefficients!r}")


class ProjectedLinear(nn.Module):
    """h basis matrices of one nn.Linear: weight (h, out, in), materialised per sequence."""

    def __init__(self, h: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = mx.zeros((h, d_out, d_in))

    def materialise(self, alpha: mx.array) -> mx.array:
        """alpha (B, h) -> W (B, out, in) = einsum('bh,hoi->boi'), as one (B, h) @ (h, out*in) matmul;
        alpha (h,) -> W (out, in)."""
        h, o, i = self.weight.shape
        return (alpha @ self.weight.reshape(h, o * i)).reshape(*alpha.shape[:-1], o, i)

    def __call__(self, x: mx.array, alpha: mx.array) -> mx.array:
        # Per sequence (alpha (B, h)): x (B, L, in) @ W_b^T (B, in, out) -> (B, L, out), a batched matmul.
        # Materialising costs B*h*out*in multiply-adds vs B*L*out*in for the matmul: ~h/L extra (x3 with
        # the backward pass). One cluster for the whole batch (alpha (h,)): one W, a plain matmul.
        return x @ self.materialise(alpha).swapaxes(-1, -2)


class ProjectedMLP(nn.Module):
    """SwiGLU like the trunk's MLP, each of gate/up/down projected: down(silu(gate(x)) * up(x))."""

    def __init__(self, args: ModelArgs, h: int):
        super().__init__()
        D, F = args.hidden_size, args.intermediate_size
        self.gate_proj = ProjectedLinear(h, D, F)
        self.up_proj = ProjectedLinear(h, D, F)
        self.down_proj = ProjectedLinear(h, F, D)

    def __call__(self, x: mx.array, alpha: mx.array) -> mx.array:
        return self.down_proj(swiglu_silu(self.gate_proj(x, alpha)) * self.up_proj(x, alpha), alpha)


class ClusterCodes(nn.Module):
    """alpha(l, .) = code @ M(l): codes E (k, m) shared by all layers, mixing M stacked as (Nl, m, h)."""

    def __init__(self, pargs: ProjectedArgs, num_layers: int):
        super().__init__()
        self.codes = mx.zeros((pargs.k, pargs.m))
        self.mix = mx.zeros((num_layers, pargs.m, pargs.h))

    def init_weights(self, shared: float = 0.0) -> None:
        # E ~ N(0, 1/m), M ~ N(0, 1/h): alpha has variance 1/h per entry, so every materialised
        # W = sum_r alpha_r T_r has the variance of one T_r (the trunk's init scale). shared = rho:
        # E[i] = (sqrt(rho) c + sqrt(1 - rho) xi_i) / sqrt(m), c common to all experts, so two experts start with
        # cosine ~rho; rho = 0 is the plain draw, bit for bit. c is scaled to its expected norm and M drawn
        # semi-orthogonal so the init cosine is rho for every seed, not the draw's (docs/methods.md, "The projected
        # network's initialisation").
        m = self.codes.shape[1]
        xi = mx.random.normal(self.codes.shape)
        self.mix = mx.random.normal(self.mix.shape) * self.mix.shape[-1] ** -0.5
        if shared == 0:
            self.codes = xi * m**-0.5
        else:
            c = mx.random.normal((m,))
            c = c * (m**0.5 / mx.maximum(mx.linalg.norm(c), 1e-12))
            self.codes = (shared**0.5 * c + (1 - shared) ** 0.5 * xi) * m**-0.5
            self.mix = _semi_orthogonal(*self.mix.shape)

    def __call__(self, cond: mx.array) -> mx.array:
        """cond (B,) int ids or (B, k) histograms -> alpha (Nl, B, h); scalar id or (k,) -> (Nl, h)."""
        ids = mx.issubdtype(cond.dtype, mx.integer)
        e = self.codes[cond] if ids else cond.astype(self.codes.dtype) @ self.codes  # (B, m) or (m,)
        return e @ self.mix  # (Nl, [B,] h)


def _semi_orthogonal(n: int, m: int, h: int) -> mx.array:
    """(n, m, h): n random m x h matrices with orthonormal rows (m <= h: |e M| = |e|, angles kept) or columns
    scaled by sqrt(m / h) (m > h: |e M|^2 = |e|^2 on average, as a N(0, 1/h) draw gives)."""
    big, small = max(m, h), min(m, h)
    q = mx.stack([mx.linalg.qr(mx.random.normal((big, small)), stream=mx.cpu)[0] for _ in range(n)])
    return q * (m / h) ** 0.5 if m > h else q.transpose(0, 2, 1) if m < h else q


class ProjectedTransformer(nn.Module):
    """The trunk with projected MLPs: (tokens (B, L), cond) -> logits (B, L, V)."""

    def __init__(self, args: ModelArgs, pargs: ProjectedArgs):
        super().__init__()
        if args.share_ffn or args.share_attn_out:
            raise ValueError("a projected network projects every layer's own MLP: build it without "
                             "share_ffn / share_attn_out")
        self.args, self.pargs = args, pargs
        self.model = LlamaModel(args)  # attention, norms, embeddings: shared by every expert
        for layer in self.model.layers:
            layer.mlp = ProjectedMLP(args, pargs.h)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if pargs.coefficients == "hypernet":
            self.coefficients = HyperNetwork(pargs.k, pargs.h, pargs.hypernet_hidden, args.num_hidden_layers)
        else:
            self.coefficients = ClusterCodes(pargs, args.num_hidden_layers)
        # Basis tensors keep the trunk's parameter names (mlp.down_proj.weight ...), so they get the trunk's
        # init (and its residual scaling) by name; the coefficients then set their own scale.
        init_trunk_weights(self, args.num_hidden_layers)
        self.coefficients.init_weights(pargs.code_shared)

    def alphas(self, cond) -> mx.array:
        """cond: (B,) int ids or (B, k) histograms -> (Nl, B, h); a scalar id or (k,) histogram -> (Nl, h)."""
        return self.coefficients(mx.array(cond) if not isinstance(cond, mx.array) else cond)

    def expert_alphas(self) -> mx.array:
        """Every cluster's coefficients (Nl, k, h): what expert i's MLPs are made of."""
        return self.alphas(mx.arange(self.pargs.k, dtype=mx.int32))

    def update_scales(self) -> dict[str, mx.array]:
        """Per-parameter multipliers of the optimizer's step (mlx_pn.train.optim), from the current coefficients.

        Under Adam every basis matrix T_r moves ~lr per element and step; for one expert, grad T_r = alpha_r G_W,
        so the steps of the T_r share G_W's direction (up to alpha_r's sign) and W = sum_r alpha_r T_r moves
        lr * ||alpha||_1: 2-3x the slm's lr at the usual init. Scaling layer l's basis steps by
        1 / mean_i ||alpha(l, i)||_1 makes a materialised W move at the slm's rate: exactly so for k = 1 (or
        experts sharing their coefficients), an upper bound on the correction for orthogonal experts. Weight
        decay is not scaled (each T_r decays by the fraction lr * wd, so W does too, like the slm's weights).
        The coefficients' own parameters (codes E and mixing M, or the hypernetwork) are multiplied by
        pargs.coef_lr (tools/measure_pn_rates.py measures what each part moves). {} when neither applies."""
        scales = {}
        if self.pargs.coef_lr != 1.0:
            c = mx.array(self.coefficient_lr(), dtype=mx.float32)
            scales = {f"coefficients.{name}": c for name, _ in tree_flatten(self.coefficients.parameters())}
        if not self.pargs.match_lr:
            return scales
        scale = 1.0 / mx.mean(mx.sum(mx.abs(self.expert_alphas()), axis=-1), axis=-1)  # (Nl,)
        return scales | {f"model.layers.{layer}.mlp.{proj}.weight": scale[layer]
                         for layer in range(self.args.num_hidden_layers) for proj in ("gate_proj", "up_proj", "down_proj")}

    def coefficient_lr(self) -> float:
        """The coefficients' step multiplier. Under Adam every coefficient parameter moves ~lr per step, and alpha,
        a sum over a width n of such terms (n = m for slm-pn's E @ M, n = hypernet_hidden for slm-hn's output
        layer), moves ~sqrt(n) as fast: measured at k = 4, lr 3e-3 (tools/measure_pn_rates.py), the hypernetwork
        (n = 64) moved every expert 0.76%/step through alpha on top of the basis' 0.97%, the codes (n = 4) 0.22%,
        the slm's own MLP 1.12%. coef_lr = 0 (matched) takes 1 / sqrt(n): alpha then moves ~0.1% per step in
        both methods, so an expert moves at about the slm's rate and the two methods at the same one."""
        if self.pargs.coef_lr:
            return self.pargs.coef_lr
        n = self.pargs.hypernet_hidden if self.pargs.coefficients == "hypernet" else self.pargs.m
        return n ** -0.5

    def hidden(self, inputs: mx.array, cond) -> mx.array:
        """(B, L) tokens -> final-norm hidden states (B, L, D): the trunk's forward, each layer's projected MLP
        given its own coefficients alphas[l]."""
        return self.model(inputs, mlp_args=self.alphas(cond))  # alphas (Nl, [B,] h)

    head = Transformer.head  # the trunk's LM head: the same attributes (args, model.embed_tokens, lm_head)

    def __call__(self, inputs: mx.array, cond) -> mx.array:
        return self.head(self.hidden(inputs, cond))

    def specialize(self, select) -> Transformer:
        """The SLM of one cluster id (int) or of a cluster histogram ((k,) weights: alpha = hist @ E @ M,
        beyond the paper), with its MLP weights materialised in closed form. A fresh, independent model."""
        if np.ndim(select) == 0:
            cond = mx.array([int(select)], dtype=mx.int32)
        else:
            hist = np.asarray(select, dtype=np.float32)
            if hist.shape != (self.pargs.k,):
                raise ValueError(f"histogram must have k={self.pargs.k} entries, got shape {hist.shape}")
            cond = mx.array(hist[None])
        alphas = self.alphas(cond)  # (Nl, 1, h)
        slm = Transformer(self.args)
        weights = []
        for name, p in tree_flatten(self.parameters()):
            if name.startswith("coefficients."):
                continue
            if ".mlp." in name:
                layer = int(name.split(".")[2])  # model.layers.N.mlp.X.weight
                h, o, i = p.shape
                p = (alphas[layer] @ p.reshape(h, o * i)).reshape(o, i)
            weights.append((name, p))
        slm.load_weights(weights, strict=True)
        mx.eval(slm.parameters())
        return slm

    def num_params(self) -> int:
        return sum(p.size for _, p in tree_flatten(self.parameters()))


def expert_cosine(model: ProjectedTransformer) -> float:
    """Mean pairwise cosine between the experts' coefficient vectors alpha(l, i), averaged over layers:
    ~0 for independent codes, ~rho with projected.code_shared = rho, 1 when every expert is the same MLP."""
    a = np.array(model.expert_alphas(), dtype=np.float64)  # (Nl, k, h)
    k = a.shape[1]
    if k < 2:
        return 1.0
    u = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-30)
    cos = u @ u.transpose(0, 2, 1)  # (Nl, k, k)
    off = ~np.eye(k, dtype=bool)
    return float(np.mean(cos[:, off]))


def build_projected(args: ModelArgs, pargs: ProjectedArgs, seed: int = 0) -> ProjectedTransformer:
    mx.random.seed(seed)
    model = ProjectedTransformer(args, pargs)
    mx.eval(model.parameters())
    return model


def projected_config(model: ProjectedTransformer, method: str) -> dict:
    """Extra config.json keys of a saved projected model (besides the llama fields of its trunk)."""
    return {"mlx_pn_method": method, "projected": model.pargs.to_dict()}


def load_projected(folder: str | Path) -> ProjectedTransformer:
    """A model saved by `train`/`save_model` with `projected_config` extras, read and checked as any model folder
    (mlx_pn.models.build.load_model: config.json's fields, the sha256.json of its files, strict weights)."""
    from mlx_pn.models.build import load_model

    def make(cfg: dict) -> ProjectedTransformer:
        if "projected" not in cfg:
            raise ValueError(f"{folder}/config.json has no 'projected' section: not a slm-pn/slm-hn model")
        return ProjectedTransformer(ModelArgs.from_dict(cfg), ProjectedArgs.from_dict(cfg["projected"]))

    return load_model(folder, make=make)
