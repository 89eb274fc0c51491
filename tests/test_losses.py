import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.losses import (cross_entropy, exp_nonpositive, logits_nll, nll_rows, reference_cross_entropy,
                                 token_nll_sum)


def test_exp_nonpositive_matches_exp():
    x = -mx.concatenate([mx.abs(mx.random.normal((10000,))) * 30, mx.array([0.0, 1e-8, 87.0, 87.5, 88.0, 1e4])])
    got, want = np.array(exp_nonpositive(x)), np.array(mx.exp(x))
    normal = want > 1.2e-38
    assert np.all(np.abs(got - want)[normal] <= 3e-7 * want[normal])
    assert np.all(got[~normal] <= 1.2e-38) and got[-1] == 0.0
    assert np.isnan(np.array(exp_nonpositive(mx.array([np.nan]))))[0]


def test_nll_rows_value_and_gradient_match_nn_losses():
    logits = mx.random.normal((64, 500)) * 4
    y = mx.random.randint(0, 500, (64,))
    ref = lambda a: nn.losses.cross_entropy(a, y, reduction="mean")  # noqa: E731
    new = lambda a: nll_rows(a, y).mean()  # noqa: E731
    np.testing.assert_allclose(new(logits).item(), ref(logits).item(), rtol=1e-6)
    np.testing.assert_allclose(np.array(mx.grad(new)(logits)), np.array(mx.grad(ref)(logits)), atol=1e-8, rtol=1e-5)
    # bf16 logits are upcast, 3-D shapes flattened
    l3 = logits.reshape(4, 16, 500)
    np.testing.assert_allclose(logits_nll(l3, y.reshape(4, 16), "sum").item(),
                               nn.losses.cross_entropy(logits, y, reduction="sum").item(), rtol=1e-6)


def test_model_loss_and_grads_match_reference():
    model = build_model(ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                                  vocab_size=101), seed=1)
    x = mx.random.randint(0, 101, (3, 9))
    y = mx.random.randint(0, 101, (3, 9))
    l1, g1 = nn.value_and_grad(model, cross_entropy)(model, x, y)
    l2, g2 = nn.value_and_grad(model, reference_cross_entropy)(model, x, y)
    np.testing.assert_allclose(l1.item(), l2.item(), rtol=1e-6)
    for (k, a), (_, b) in zip(tree_flatten(g1), tree_flatten(g2)):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-7, rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(token_nll_sum(model, x, y).item(), l2.item() * y.size, rtol=1e-5)


def test_nll_sum_hook_is_used():
    class Own(nn.Module):
        def nll_sum(self, x, y, *extras):
            return mx.array(6.0) + sum(e.sum() for e in extras)

    assert cross_entropy(Own(), mx.zeros((2, 3)), mx.zeros((2, 3))).item() == 1.0
    assert token_nll_sum(Own(), mx.zeros((2, 3)), mx.zeros((2, 3)), mx.array([1, 2])).item() == 9.0


def test_fast_silu_matches_nn_silu():
    from mlx_pn.train.losses import silu

    x = mx.random.normal((2000,)) * 6
    u = mx.random.normal((2000,))
    np.testing.assert_allclose(np.array(silu(x)), np.array(nn.silu(x)), atol=2e-6, rtol=1e-5)
    g1 = mx.grad(lambda a: (silu(a) * u).sum())(x)
    g2 = mx.grad(lambda a: (nn.silu(a) * u).sum())(x)
    np.testing.assert_allclose(np.array(g1), np.array(g2), atol=2e-6, rtol=1e-5)


@pytest.mark.slow
def test_compiled_path_matches_reference(tmp_path):
    """The fused exp only runs with mx.compile on (the test session disables it): check it in a subprocess,
    over two shapes (one trace each). The compiled training step: test_train.test_compiled_step_matches_eager."""
    import os
    import subprocess
    import sys

    code = """
import mlx_pn, mlx.core as mx, mlx.nn as nn, numpy as np
from mlx_pn.train.losses import nll_rows, silu
for n, v in ((6, 50), (9, 70)):
    x = mx.random.normal((n, v)) * 5; y = mx.random.randint(0, v, (n,))
    f = mx.compile(mx.value_and_grad(lambda a: nll_rows(a, y).mean()))
    r = mx.value_and_grad(lambda a: nn.losses.cross_entropy(a, y, reduction="mean"))
    (l1, g1), (l2, g2) = f(x), r(x)
    assert abs(l1.item() - l2.item()) < 1e-5 and mx.abs(g1 - g2).max().item() < 1e-6
    s = mx.compile(mx.grad(lambda a: silu(a).sum()))(x)
    assert mx.abs(s - mx.grad(lambda a: nn.silu(a).sum())(x)).max().item() < 1e-5
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "MLX_DISABLE_COMPILE"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-3000:]
