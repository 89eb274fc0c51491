"""Serving many specialists behind one OpenAI-style endpoint, each request routed by its text's clusters.

router: a text -> (domain or "generic", score, confident?); models: a run's specialists and generic model;
experts: a slm-pn / slm-hn run's experts materialised on demand from its trunk; ensemble: c-BTM's top-2 mixture;
server: the HTTP endpoint on mlx-lm's generation.
"""
