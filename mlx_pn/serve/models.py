"""A run's models for serving: one specialist per specialized domain, and the generic pretrained model.

Each specialist comes from its mlx-lm export (OUT/export[-METHOD]/DOMAIN, preferred: it is what users ship)
or else from its specialization's final model (OUT/specialize[-METHOD]/DOMAIN/final) with the run's
tokenizer; the generic model is OUT/pretrain[-METHOD]/final. A model that fails to load is kept as an error,
so that requests routed to it get a 500 and the others are still served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlx_pn.data.prepare import GENERIC
from mlx_pn.methods.layout import BASE_METHOD, pretrain_dir, specialize_dir


@dataclass
class Served:
    """One model the server answers for. model/tokenizer are None when loading failed (error says why)."""

    name: str
    source: Path
    model: object = None
    tokenizer: object = None  # mlx_lm TokenizerWrapper
    context: int = 0  # most prompt + completion tokens the model takes
    chat_template: bool = False  # the tokenizer carries a chat template (exported); else "user: P\nassistant:"
    error: str = ""
    extra: dict = field(default_factory=dict)


def export_folder(cfg, domain: str) -> Path:
    """OUT/export[-METHOD]/DOMAIN, where `mlx-pn export` writes a domain's mlx-lm folder."""
    return Path(cfg.out) / ("export" if cfg.method == BASE_METHOD else f"export-{cfg.method}") / domain


def model_sources(cfg) -> dict[str, Path]:
    """{name: folder} of every model the run has: its specialized domains (export, else final/) and generic."""
    out = {}
    for d in cfg.data.domains:
        exp, final = export_folder(cfg, d), specialize_dir(cfg, d) / "final"
        if (exp / "config.json").exists():
            out[d] = exp
        elif (final / "model.safetensors").exists():
            out[d] = final
    generic = pretrain_dir(cfg) / "final"
    if (generic / "model.safetensors").exists():
        out[GENERIC] = generic
    return out


def _context(model, config: dict, default: int) -> int:
    args = getattr(model, "args", None)
    return int(getattr(args, "max_position_embeddings", 0) or config.get("max_position_embeddings") or default)


def load_served(name: str, folder: Path, tokenizer_dir: Path, default_context: int = 1024) -> Served:
    """One model folder -> Served (an export through mlx-lm's loader; a final/ folder through mlx_pn's)."""
    from mlx_lm.utils import load as mlx_lm_load
    from mlx_lm.utils import load_tokenizer

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        if (folder / "tokenizer.json").exists():  # an export: mlx-lm loads it as any mlx-lm model
            model, tok = mlx_lm_load(str(folder))
        else:
            from mlx_pn.models.build import load_model

            model, tok = load_model(folder), load_tokenizer(Path(tokenizer_dir))
        return Served(name, folder, model, tok, _context(model, config, default_context),
                      bool(getattr(tok, "chat_template", None)))
    except Exception as e:  # noqa: BLE001 - one broken model must not stop the others from being served
        return Served(name, folder, error=f"{folder}: cannot load ({type(e).__name__}: {e})")


def load_run_models(cfg, log=print) -> dict[str, Served]:
    """{name: Served} of the run's specialists and generic model; ValueError when it has none at all."""
    sources = model_sources(cfg)
    if not sources:
        raise ValueError(f"{cfg.out}: no specialized or pretrained model found (looked for "
                         f"{export_folder(cfg, 'DOMAIN')}, {specialize_dir(cfg, 'DOMAIN')}/final and "
                         f"{pretrain_dir(cfg)}/final); run `mlx-pn pretrain` and `mlx-pn specialize` first")
    tok_dir = cfg.data_dir / "tokenizer" / "hf"
    out = {}
    for name, folder in sources.items():
        out[name] = load_served(name, folder, tok_dir, cfg.pretrain.seq_len)
        log(f"[serve] {name}: {out[name].error or folder}")
    return out
