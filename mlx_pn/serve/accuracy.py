"""Routing accuracy on held-out text: each domain's test split cut into prompts of N tokens, routed by a rule."""

from __future__ import annotations

import numpy as np


def heldout_prompts(data, corpus: str, n_tokens: int, limit: int = 0, split: str = "test") -> list[str]:
    """The corpus's `split` tokens cut into consecutive prompts of n_tokens (decoded); at most `limit` (0: all)."""
    tokens = np.asarray(data.corpora[corpus].tokens(split))
    n = len(tokens) // n_tokens
    if limit:
        n = min(n, limit)
    return [data.tokenizer.decode(tokens[i * n_tokens:(i + 1) * n_tokens].tolist()) for i in range(n)]


def routing_accuracy(router, data, domains: list[str], n_tokens: int, limit: int = 0) -> dict:
    """{rule: {domain: accuracy, "macro": mean}, "n": {domain: prompts}}: a prompt is right when the rule's
    best domain (before the confidence test) is its true domain."""
    out = {rule: {} for rule in ("hist", "centroid")}
    counts = {}
    for d in domains:
        prompts = heldout_prompts(data, d, n_tokens, limit)
        counts[d] = len(prompts)
        hits = {rule: 0 for rule in out}
        for text in prompts:
            s = router.scores(text)
            for rule in out:
                hits[rule] += router.names[int(np.argmax(s[rule]))] == d
        for rule in out:
            out[rule][d] = hits[rule] / max(len(prompts), 1)
    for rule in out:
        out[rule]["macro"] = float(np.mean([out[rule][d] for d in domains]))
    return out | {"n": counts}
