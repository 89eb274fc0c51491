"""A model folder's config.json checked before anything is built from it: a folder can come from anywhere (a
download, a colleague), and its numbers decide how much memory a model takes. Every architecture field must be a
positive integer in a range a model can have, the heads must divide the width, and the float32 weights must fit
in memory (mlx_pn.memory) — each a one-line CheckpointError naming the file, the field and the fix, instead of a
TypeError, a ZeroDivisionError or the kernel's OOM killer."""

from __future__ import annotations

import json
from pathlib import Path

# field: (required, largest value a model of this library can have); widths far past any LLM's, counts likewise
LIMITS = {"hidden_size": (True, 1 << 16), "num_hidden_layers": (True, 1 << 10), "intermediate_size": (True, 1 << 18),
          "num_attention_heads": (True, 1 << 10), "vocab_size": (True, 1 << 24), "num_key_value_heads": (False, 1 << 10),
          "max_position_embeddings": (False, 1 << 22)}


def read_config(folder: Path, error) -> dict:
    """folder/config.json as a dict: a regular file (not a link: it would be read from wherever it points), valid
    JSON, an object. `error`: the exception class to raise."""
    path = Path(folder) / "config.json"
    if path.is_symlink():
        raise error(f"{path} is a symbolic link (to {path.resolve()}); a model folder's config.json must be its own "
                    f"file: copy the folder without links")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} is not readable JSON ({str(e).splitlines()[0][:120]}); restore it from the run that "
                    f"wrote the folder") from None
    if not isinstance(cfg, dict):
        raise error(f"{path} holds a JSON {type(cfg).__name__}, not an object of model settings")
    return cfg


def check_config(cfg: dict, path: Path, error) -> None:
    """The architecture fields of a config.json (path: for the message) as a model can have them."""
    for key, (required, top) in LIMITS.items():
        if key not in cfg or (cfg[key] is None and not required):
            if required:
                raise error(f"{path}: field '{key}' is missing; a model folder's config.json names its architecture")
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise error(f"{path}: field '{key}' must be a whole number, got {v!r} ({type(v).__name__}); fix the "
                        f"field (e.g. {key}: 64, not \"64\")")
        if not 0 < v <= top:
            raise error(f"{path}: field '{key}' must be between 1 and {top:,}, got {v:,}; the folder is damaged "
                        f"or not a model of this library")
    d, h = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or h
    if d % h or h % kv:
        raise error(f"{path}: num_attention_heads ({h}) must divide hidden_size ({d}) and be a multiple of "
                    f"num_key_value_heads ({kv}); the folder is damaged or not a model of this library")
