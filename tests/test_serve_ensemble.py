"""c-BTM's top-2 ensemble (mlx_pn.serve.ensemble) on two small random models: the mixture's distribution, its
cached generation through mlx-lm, and its perplexity arithmetic."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.serve.ensemble import Mixture, mixture_nll, top2

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)


def _logp(model, x):
    logits = model(x).astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def test_mixture_is_the_weighted_sum_of_next_token_probabilities():
    a, b = build_model(ARGS, seed=1), build_model(ARGS, seed=2)
    x = mx.array(np.random.default_rng(0).integers(0, 97, (2, 9)).astype(np.int32))
    mix = Mixture([a, b], [3.0, 1.0])  # renormalised: 0.75 / 0.25
    want = np.log(0.75 * np.exp(np.array(_logp(a, x))) + 0.25 * np.exp(np.array(_logp(b, x))))
    assert np.abs(np.array(mix(x)) - want).max() < 1e-5
    assert np.abs(np.array(mx.logsumexp(mix(x), axis=-1))).max() < 1e-5  # a distribution
    assert np.abs(np.array(_logp(a, x)) - np.array(_logp(b, x))).max() > 1e-2  # the members differ


def test_mixture_generates_through_mlx_lm_with_its_members_caches():
    from mlx_lm.generate import generate_step

    a, b = build_model(ARGS, seed=1), build_model(ARGS, seed=2)
    mix = Mixture([a, b], [0.6, 0.4])
    prompt = mx.array([5, 17, 3, 40], dtype=mx.uint32)
    steps = []
    for (tok, logprobs), _ in zip(generate_step(prompt, mix, max_tokens=6), range(6)):
        steps.append((int(tok), np.array(logprobs)))
    seq = [*prompt.tolist(), *[t for t, _ in steps]]
    full = np.array(mix(mx.array([seq[:-1]])))[0]  # no cache: every position recomputed
    for i, (tok, logprobs) in enumerate(steps):
        row = full[len(prompt) - 1 + i]
        assert tok == int(row.argmax())  # greedy on the mixture
        assert np.abs(logprobs - row).max() < 1e-4  # the cached step's distribution is the uncached one's


def test_mixture_nll_and_top2():
    lp1, lp2 = np.log([0.5, 0.1, 0.2]), np.log([0.1, 0.3, 0.4])
    want = -np.log(0.7 * np.exp(lp1) + 0.3 * np.exp(lp2)).sum()
    assert abs(mixture_nll([lp1, lp2], [0.7, 0.3]) - want) < 1e-9
    assert abs(mixture_nll([lp1, lp2], [1.0, 1e-12]) + lp1.sum()) < 1e-6  # all weight on one: that model's nll
    pair = top2(np.array([0.1, 0.6, 0.3]), ["g", "a", "b"])
    assert [n for n, _ in pair] == ["a", "b"] and np.allclose([w for _, w in pair], [2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="positive weight"):
        Mixture([build_model(ARGS, seed=1)], [0.0])
