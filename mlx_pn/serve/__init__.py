"""Serving many specialists behind one OpenAI-style endpoint, each request routed by its text's clusters.

router: a text -> (domain or "generic", score, confident?); models: a run's specialists and generic model;
server: the HTTP endpoint on mlx-lm's generation.
"""
