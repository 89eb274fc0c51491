"""A run's models for serving: one specialist per specialized domain, and the generic pretrained model.

Each specialist comes from its mlx-lm export (OUT/export[-METHOD]/DOMAIN, preferred: it is what users ship)
or else from its specialization's final model (OUT/specialize[-METHOD]/DOMAIN/final) with the run's
tokenizer; the generic model is OUT/pretrain[-METHOD]/final. A slm-pn / slm-hn run serves its generic model
and every domain without a specialization of its own from the projected network (mlx_pn.serve.experts: one
resident trunk, experts materialised on demand). A model that fails to load is kept as an error, so that
requests routed to it get a 500 and the others are still served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlx_pn.data.prepare import GENERIC
from mlx_pn.methods.layout import BASE_METHOD, pretrain_dir, specialize_dir
from mlx_pn.serve.experts import is_projected


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
    experts: object = None  # an ExpertCache when the model is materialised on demand from a projected trunk

    def load(self):
        """The model to generate with: the resident one, or this name's expert from the trunk's cache."""
        return self.model if self.experts is None else self.experts.get(self.name)


def export_folder(cfg, domain: str) -> Path:
    """OUT/export[-METHOD]/DOMAIN, where `mlx-pn export` writes a domain's mlx-lm folder."""
    return Path(cfg.out) / ("export" if cfg.method == BASE_METHOD else f"export-{cfg.method}") / domain


def model_sources(cfg) -> dict[str, Path]:
    """{name: folder} of every model the run has: its specialized domains (export, else final/) and generic
    (for slm-pn / slm-hn: the projected trunk's folder)."""
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


def load_run_models(cfg, log=print, expert_cache: int = 4) -> dict[str, Served]:
    """{name: Served} of the run's specialists and generic model; ValueError when it has none at all.
    expert_cache: how many experts a slm-pn / slm-hn trunk keeps materialised."""
    sources = model_sources(cfg)
    if not sources:
        raise ValueError(f"{cfg.out}: no specialized or pretrained model found (looked for "
                         f"{export_folder(cfg, 'DOMAIN')}, {specialize_dir(cfg, 'DOMAIN')}/final and "
                         f"{pretrain_dir(cfg)}/final); run `mlx-pn pretrain` and `mlx-pn specialize` first")
    tok_dir = cfg.data_dir / "tokenizer" / "hf"
    out = {}
    if GENERIC in sources and is_projected(sources[GENERIC]):  # slm-pn / slm-hn: serve from the trunk
        names = [d for d in cfg.data.domains if d not in sources] + [GENERIC]
        out.update(projected_served(cfg, sources[GENERIC], names, tok_dir, expert_cache, log))
    for name, folder in sources.items():
        if name not in out:
            out[name] = load_served(name, folder, tok_dir, cfg.pretrain.seq_len)
            log(f"[serve] {name}: {out[name].error or folder}")
    return {n: out[n] for n in [*cfg.data.domains, GENERIC] if n in out}  # the run's order: domains, generic


def projected_served(cfg, trunk_dir: Path, names: list[str], tokenizer_dir: Path, cache_size: int,
                     log=print) -> dict[str, Served]:
    """{name: Served} materialised on demand from the projected trunk in trunk_dir: a domain from its cluster
    histogram under the run's selection rule, generic from the generic corpus's histogram (every cluster
    weighted as often as generic text falls in it). A trunk or clustering that cannot be read is each name's
    error."""
    from mlx_lm.utils import load_tokenizer

    from mlx_pn.methods import get
    from mlx_pn.methods.layout import method_clustering
    from mlx_pn.methods.routed import resolve_select
    from mlx_pn.models.projected import load_projected
    from mlx_pn.serve.experts import ExpertCache, expert_select

    try:
        trunk, tok = load_projected(trunk_dir), load_tokenizer(Path(tokenizer_dir))
        hists = method_clustering(cfg).histograms
    except Exception as e:  # noqa: BLE001 - the run's exports and fine-tuned folders are still served
        error = f"{trunk_dir}: cannot serve from the projected network ({type(e).__name__}: {e})"
        return {n: Served(n, trunk_dir, error=error) for n in names}
    select = resolve_select(cfg, get(cfg.method).select or "most-frequent")
    if select in ("best-loss", "all"):
        log(f"[serve] select={select} needs a fine-tuning run per domain; domains served from the trunk use their "
            f"top cluster (most-frequent)")
    selects, out = {}, {}
    for n in names:
        if n not in hists:
            out[n] = Served(n, trunk_dir, error=f"{n}: no cluster histogram in the run's clustering (k="
                                                f"{cfg.cluster.k}); run `mlx-pn cluster` again to add it")
            continue
        selects[n] = expert_select("histogram" if n == GENERIC else select, hists[n])
    cache = ExpertCache(trunk, selects, cache_size)
    context = int(trunk.args.max_position_embeddings or cfg.pretrain.seq_len)
    for n, s in selects.items():
        how = f"cluster {s}" if np.ndim(s) == 0 else "its cluster histogram"
        out[n] = Served(n, trunk_dir, tokenizer=tok, context=context,
                        chat_template=bool(getattr(tok, "chat_template", None)), extra={"select": s}, experts=cache)
        log(f"[serve] {n}: from the projected network {trunk_dir} ({how}, materialised on demand)")
    return out
