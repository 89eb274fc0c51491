"""c-BTM's top-2 ensemble: the next-token distribution of the two best-routed models, mixed by their routing scores.

    p(x_t | x_<t) = w_1 p_1(x_t | x_<t) + w_2 p_2(x_t | x_<t),   (w_1, w_2) = the two best scores / their sum

(c-BTM weights every expert by its cluster's posterior given the context; here the posterior is the router's
softmax score of the whole prompt, fixed for the request.) `Mixture` is a model mlx-lm's generation runs as
any other: it returns log p as its logits (a valid input to mlx-lm's samplers), and its cache is its members'
caches side by side. Every member must share the run's tokenizer (the same vocabulary).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np


class Mixture:
    """A weighted mixture of the next-token distributions of `models` (weights > 0, renormalised to sum 1)."""

    def __init__(self, models: list, weights: list[float]):
        if len(models) != len(weights) or not models or min(weights) <= 0:
            raise ValueError(f"a mixture needs one positive weight per model, got {weights}")
        total = float(sum(weights))
        self.models = list(models)
        self.log_w = [math.log(w / total) for w in weights]
        self.layers = [layer for m in self.models for layer in m.layers]
        self._sizes = [len(self._member_cache(m)) for m in self.models]

    @staticmethod
    def _member_cache(model) -> list:
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(model)

    def make_cache(self) -> list:
        """The members' caches side by side (mlx-lm's make_prompt_cache calls this)."""
        return [c for m in self.models for c in self._member_cache(m)]

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        """(B, L) tokens -> (B, L, V) log-probabilities of the mixture."""
        parts, i = [], 0
        for m, n, lw in zip(self.models, self._sizes, self.log_w):
            c = None if cache is None else cache[i:i + n]
            i += n
            logits = m(inputs, cache=c).astype(mx.float32)
            parts.append(lw + logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        return mx.logsumexp(mx.stack(parts), axis=0)


def top2(scores: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    """The two best-scoring names and their weights (renormalised to sum 1), best first."""
    order = np.argsort(-np.asarray(scores))[:2]
    total = float(sum(scores[i] for i in order))
    return [(names[i], float(scores[i]) / total) for i in order]


def mixture_nll(token_logprobs: list[np.ndarray], weights: list[float]) -> float:
    """Summed NLL of a token sequence under the mixture, from each model's log p of the same tokens (arrays of
    equal length): -sum_t log sum_i w_i p_i(x_t)."""
    lw = np.log(np.asarray(weights, np.float64) / float(sum(weights)))[:, None]
    lp = np.stack([np.asarray(t, np.float64) for t in token_logprobs]) + lw
    m = lp.max(axis=0)
    return float(-(m + np.log(np.exp(lp - m).sum(axis=0))).sum())
