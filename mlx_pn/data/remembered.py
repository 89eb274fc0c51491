"""What a run's data was prepared from, written once to DATA/sources.json, so that every later command on the same
run (--out, or --data.dir) defaults to it: after `prepare --corpus ~/texts`, `pretrain` needs no --data.generic.

A key the user sets (on the command line or in the --config file) always wins; when it differs from what the
run's tokenizer and shards were made from, the data stage says so, as before."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_pn.io import write_json_atomic

FILE = "sources.json"
KEYS = ("generic", "domains", "vocab_size", "valid_fraction", "test_fraction", "max_docs", "tokenizer_sample_mb")


def stored(data_dir: Path) -> dict:
    try:
        d = json.loads((Path(data_dir) / FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def record(cfg) -> None:
    """Write the data settings this run's data stage used (only when they changed: one small file)."""
    now = {k: getattr(cfg.data, k) for k in KEYS}
    if stored(cfg.data_dir) != now:
        write_json_atomic(cfg.data_dir / FILE, now)


def adopt(cfg, explicit: set[str]) -> list[str]:
    """Set every data key the user did not set (`explicit`: dotted keys from the command line and the config
    file) to the run's recorded value; -> the keys changed. Domains added with data.add_domains go on top."""
    made, changed = stored(cfg.data_dir), []
    for k in KEYS:
        if k not in made or f"data.{k}" in explicit:
            continue
        value = made[k]
        if k == "domains":
            value = {**value, **cfg.data.add_domains}
        if getattr(cfg.data, k) != value:
            setattr(cfg.data, k, value)
            changed.append(f"data.{k}")
    return changed


def dotted_keys(d: dict, prefix: str = "") -> set[str]:
    """{'data': {'generic': x}} -> {'data', 'data.generic'}: the keys a config file sets."""
    out = set()
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict) and key != "data.domains" and key != "data.add_domains":
            out |= dotted_keys(v, key + ".")
    return out
