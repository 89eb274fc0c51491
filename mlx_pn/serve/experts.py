"""A slm-pn / slm-hn run served from its projected network: one resident trunk, experts materialised on demand.

The trunk (OUT/pretrain-METHOD/final, a ProjectedTransformer) stays in memory; a name's expert is
ProjectedTransformer.specialize(its cluster id or histogram), made when a request needs it and kept in a small
LRU cache. A materialised expert holds the trunk's own attention, norm and embedding arrays (the same MLX
buffers, not copies): each cached expert adds only its MLP weights. Specialists fine-tuned after
materialising are separate folders and load as such (mlx_pn.serve.models).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np



def is_projected(folder: Path) -> bool:
    """A model folder holding a projected network (slm-pn / slm-hn pretraining): its config has a "projected"
    section (mlx_pn.models.projected.projected_config)."""
    f = Path(folder) / "config.json"
    try:
        return "projected" in json.loads(f.read_text())
    except (OSError, ValueError):
        return False


class ExpertCache:
    """{name: cluster id | (k,) histogram} -> materialised Transformers, the `size` most recently used kept.
    Not thread-safe by itself: the server calls it from its one worker thread."""

    def __init__(self, trunk, selects: dict, size: int = 4):
        if size < 1:
            raise ValueError(f"--expert-cache {size}: keep at least 1 materialised expert")
        self.trunk, self.selects, self.size = trunk, dict(selects), size
        self._lru: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, name: str):
        key = _key(self.selects[name])  # names made of the same cluster share one expert
        if key in self._lru:
            self._lru.move_to_end(key)
            self.hits += 1
            return self._lru[key][1]
        model = self.trunk.specialize(self.selects[name])
        self.misses += 1
        self._lru[key] = (name, model)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)  # dropped: its MLP arrays are freed once no generation holds them
        return model

    def cached(self) -> list[str]:
        """The names whose experts are materialised now (the first name that asked for each), least recently
        used first."""
        return [name for name, _ in self._lru.values()]


def _key(select) -> tuple:
    return ("cluster", int(select)) if np.ndim(select) == 0 else ("histogram", np.asarray(select, np.float32).tobytes())


def expert_select(select: str, hist: np.ndarray):
    """What an expert is made of under a selection rule: most-frequent -> the top cluster id; histogram -> the
    whole histogram. best-loss / all need fine-tuning runs to decide, so a domain served without its
    specialization uses its top cluster (said in the log by the caller)."""
    return np.asarray(hist, np.float32) if select == "histogram" else int(np.argmax(hist))


def weights_bytes(models) -> int:
    """Bytes of the distinct parameter arrays of `models` (an array held by several models counts once)."""
    from mlx.utils import tree_flatten

    seen = {}
    for m in models:
        for _, p in tree_flatten(m.parameters()):
            seen[id(p)] = p.nbytes
    return sum(seen.values())
