"""The "before fine-tuning" test perplexities, kept beside the specialization (OUT/specialize/DOMAIN/before.json)
and reused while what they depend on is unchanged: the starting weights, the test splits and how they are cut
and batched. A rerun with another fine-tuning budget (--finetune.steps, --no-resume) measured them again: minutes
on a CPU for numbers that could not differ."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_pn.fingerprint import model_keys, normalise, weights_sha256
from mlx_pn.io import write_json_atomic

FILE = "before.json"


def before_key(model, data, domain: str, cfg) -> dict:
    """What the numbers depend on: the weights and model, the generic and domain test splits, the windows."""
    splits = {f"data.{name}.test": data.corpora[name].manifest["splits"]["test"].get("sha256")
              for name in ("generic", domain)}
    return normalise({"start.weights": weights_sha256(model), **model_keys(model), **splits,
                      "finetune.seq_len": cfg.finetune.seq_len, "finetune.batch_size": cfg.finetune.batch_size,
                      "data.test_windows": cfg.data.test_windows})


def measure_before(model, data, domain: str, cfg, out: Path, log, measure, write: bool = True) -> dict:
    """measure(model, data, domain, cfg, log, when) before fine-tuning, or the numbers of OUT/before.json when its
    key is this one (said in one line). write: whether this process records them (rank 0)."""
    key = before_key(model, data, domain, cfg)
    path = Path(out) / FILE
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    if isinstance(kept, dict) and kept.get("key") == key and isinstance(kept.get("before"), dict):
        if log is not None:
            log(f"[evaluate] test splits of generic and {domain} before fine-tuning: the numbers measured for these "
                f"weights and test splits ({path})")
        return kept["before"]
    before = measure(model, data, domain, cfg, log, "before fine-tuning")
    if write:
        write_json_atomic(path, {"key": key, "before": before})
    return before
