"""A run -> the server's App: its models (mlx_pn.serve.models) and its router (mlx_pn.serve.router)."""

from __future__ import annotations

from mlx_pn.data.prepare import GENERIC
from mlx_pn.serve.models import load_run_models
from mlx_pn.serve.server import App


def build_app(cfg, tokenizer, rule: str = "centroid", min_confidence: float = 0.5, k: int | None = None,
              log=print, expert_cache: int = 4, ensemble: int = 1) -> App:
    """Load the run's models and router. Without a clustering on disk the server still runs: "auto" then
    answers with the generic model (said once in the log). expert_cache: experts a slm-pn / slm-hn trunk keeps
    materialised; ensemble 2: "auto" mixes the two best-routed models' next-token distributions."""
    from mlx_pn.serve.router import load_router

    models = load_run_models(cfg, log, expert_cache)
    try:
        router = load_router(cfg, tokenizer, k=k, rule=rule, min_confidence=min_confidence)
    except FileNotFoundError as e:
        log(f"[serve] no routing ({e}); 'auto' answers with the generic model")
        router = None
    return App(models, router, GENERIC, ensemble)
