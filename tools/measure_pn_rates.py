"""How fast does each part of a projected network move its experts, against the slm's own MLP? (issue: the
seed spread of slm-pn / slm-hn)

For an expert i of layer l, W = sum_r alpha_r T_r. One optimizer step changes both; this splits the step's change
of every materialised MLP matrix into the part the coefficients made (alpha' with the old T) and the part the
basis made (T' with the old alpha), each relative to ||W||, averaged over experts, layers, gate/up/down and the
steps after warm-up; the slm's MLP matrices (the same trunk, the same batches) are the reference. The rates are
what projected.coef_lr (the coefficient networks' step multiplier) and projected.match_lr (the basis') set.

    python -m tools.measure_pn_rates [--k 4] [--steps 150] [--lr 3e-3] [--coef-lr 1 0]
"""

from __future__ import annotations

import argparse
import tempfile

import mlx_pn  # noqa: F401  (the BLAS before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_pn.config import TrainConfig
from mlx_pn.models.build import build_model
from mlx_pn.models.projected import ProjectedArgs, build_projected
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.optim import make_optimizer

PROJ = ("gate_proj", "up_proj", "down_proj")


def _experts(model) -> list[np.ndarray]:
    """Every expert's materialised MLP matrices, flattened: [(Nl * 3) arrays of (k, out * in)]."""
    a = model.expert_alphas()  # (Nl, k, h)
    out = []
    for layer, block in enumerate(model.model.layers):
        for p in PROJ:
            t = getattr(block.mlp, p).weight  # (h, o, i)
            out.append(np.array(a[layer] @ t.reshape(t.shape[0], -1)))
    return out


def _materialise(alphas, bases) -> list[np.ndarray]:
    return [a @ t for a, t in zip(alphas, bases)]


def _rel(new, old) -> float:
    return float(np.mean([np.linalg.norm(n - o, axis=-1).mean() / np.linalg.norm(o, axis=-1).mean()
                          for n, o in zip(new, old)]))


def measure(args: ModelArgs, k: int, steps: int, lr: float, coef_lr, coefficients: str, tokens: np.ndarray,
            seq: int = 64, batch: int = 8, seed: int = 0) -> dict:
    cfg = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup=steps // 10, batch_size=batch, seq_len=seq)
    rng = np.random.default_rng(seed)
    pn = build_projected(args, ProjectedArgs(k=k, coefficients=coefficients, code_shared=0.9, match_lr=True,
                                             coef_lr=coef_lr), seed=seed)
    slm = build_model(args, seed=seed)
    opts = {"pn": make_optimizer(cfg), "slm": make_optimizer(cfg)}
    coef, basis, slm_rate, alpha_rate = [], [], [], []
    for step in range(steps):
        starts = rng.integers(0, len(tokens) - seq - 1, batch)
        x = mx.array(np.stack([tokens[s:s + seq] for s in starts]))
        y = mx.array(np.stack([tokens[s + 1:s + seq + 1] for s in starts]))
        cond = mx.array(rng.integers(0, k, batch).astype(np.int32))
        a0 = [np.array(model_a) for model_a in _alpha_rows(pn)]
        t0 = [np.array(getattr(b.mlp, p).weight.reshape(getattr(b.mlp, p).weight.shape[0], -1))
              for b in pn.model.layers for p in PROJ]
        w_slm0 = [np.array(getattr(b.mlp, p).weight) for b in slm.model.layers for p in PROJ]
        for name, model, extra in (("pn", pn, (cond,)), ("slm", slm, ())):
            loss, grads = nn.value_and_grad(model, lambda m, *a: cross_entropy(m, *a))(model, x, y, *extra)
            opts[name].update(model, grads)
            mx.eval(model.parameters(), opts[name].state)
        a1 = [np.array(r) for r in _alpha_rows(pn)]
        t1 = [np.array(getattr(b.mlp, p).weight.reshape(getattr(b.mlp, p).weight.shape[0], -1))
              for b in pn.model.layers for p in PROJ]
        if step < cfg.warmup:
            continue
        w0 = _materialise(a0, t0)
        coef.append(_rel(_materialise(a1, t0), w0))
        basis.append(_rel(_materialise(a0, t1), w0))
        alpha_rate.append(float(np.mean([np.linalg.norm(n - o, axis=-1).mean() / np.linalg.norm(o, axis=-1).mean()
                                         for n, o in zip(a1, a0)])))
        w_slm1 = [np.array(getattr(b.mlp, p).weight) for b in slm.model.layers for p in PROJ]
        slm_rate.append(float(np.mean([np.linalg.norm(n - o) / np.linalg.norm(o) for n, o in zip(w_slm1, w_slm0)])))
    return {"coefficients": coefficients, "coef_lr": coef_lr, "coef_part": float(np.mean(coef)),
            "basis_part": float(np.mean(basis)), "slm": float(np.mean(slm_rate)), "alpha": float(np.mean(alpha_rate))}


def _alpha_rows(pn) -> list:
    """alpha per (layer, projection): (k, h), repeated for gate/up/down (they share one layer's coefficients)."""
    a = pn.expert_alphas()
    return [a[layer] for layer in range(a.shape[0]) for _ in PROJ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=4, help="clusters (experts); m = h = k")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps (the first 10%% are warm-up, not counted)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (compare-cpu's)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (tiny preset: 64, 2 layers, F = 4 d)")
    p.add_argument("--coef-lr", nargs="+", default=["1", "0"], help="projected.coef_lr values to compare (0 = matched: 1 / sqrt(m or hypernet_hidden))")
    a = p.parse_args(argv)
    from mlx_pn.methods import load_config
    from mlx_pn.data.prepare import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("recipes/configs/tiny.yaml", {"out": tmp, "data.max_docs": "300"})
        data = prepare_data(cfg, log=lambda *x: None)
        tokens = np.asarray(data.corpora["generic"].tokens("train"), dtype=np.int32)
        args = ModelArgs(hidden_size=a.hidden, num_hidden_layers=2, intermediate_size=4 * a.hidden,
                         num_attention_heads=4, vocab_size=data.tokenizer.vocab_size)
        print(f"d={a.hidden}, k=m=h={a.k}, lr {a.lr:g}, {a.steps} steps; relative change of the materialised MLP "
              "matrices per step (mean over experts, layers, steps after warm-up)")
        print("| coefficients | coef_lr | from the coefficients | from the basis | slm's MLP | alpha itself |")
        print("|---|---|---|---|---|---|")
        for coefficients in ("codes", "hypernet"):
            for c in a.coef_lr:
                r = measure(args, a.k, a.steps, a.lr, float(c), coefficients, tokens)
                print(f"| {coefficients} | {c} | {r['coef_part']:.4f} | {r['basis_part']:.4f} | {r['slm']:.4f} | "
                      f"{r['alpha']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
