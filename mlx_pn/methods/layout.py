"""Where every method's stages write (mlx_pn.train.stage keeps each folder's books).

    OUT/data/                        tokenizer + shards (mlx_pn.data.prepare)
    OUT/pretrain[-METHOD]/           checkpoints, metrics.jsonl, final/, summary.json (with its "cost")
    OUT/pretrain-METHOD/DOMAIN/      a method pretrained once per domain (slm-is)
    OUT/specialize[-METHOD]/DOMAIN[-NNNtok]/   checkpoints, metrics.jsonl, final/, results.json
    OUT/export/DOMAIN/               the mlx-lm model folder

The base method (slm) writes the folders without a suffix; every other method adds its name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mlx_pn.config import Config, ConfigError, check_name

BASE_METHOD = "slm"  # its folders carry no method suffix (OUT/pretrain, OUT/specialize)


def _stage_root(cfg: Config, stage: str) -> Path:
    return Path(cfg.out) / (stage if cfg.method == BASE_METHOD else f"{stage}-{cfg.method}")


def pretrain_dir(cfg: Config, domain: str | None = None) -> Path:
    """OUT/pretrain[-METHOD], or OUT/pretrain-METHOD/DOMAIN for a method pretrained per domain."""
    root = _stage_root(cfg, "pretrain")
    if domain:
        check_name(domain, "domain")  # a folder under --out, nothing outside it
    return root / domain if domain else root


def specialize_dir(cfg: Config, domain: str, domain_tokens: int = 0) -> Path:
    """OUT/specialize[-METHOD]/DOMAIN, or DOMAIN-NNNtok when fine-tuning on the first NNN domain tokens only;
    -TAG after it: cfg.specialize_tag (one of the comparison grid's specialization settings)."""
    tag = cfg.specialize_tag
    name = (f"{domain}-{domain_tokens}tok" if domain_tokens else domain) + (f"-{tag}" if tag else "")
    return _stage_root(cfg, "specialize") / check_name(name, "domain")  # a folder under --out, nothing outside it


def as_method(cfg: Config, method: str) -> Config:
    """The same config for another method (slm-d reads slm's and llm's folders)."""
    return dataclasses.replace(cfg, method=method)


def read_summary(folder: Path) -> dict | None:
    p = folder / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None


def method_clustering(cfg: Config, key: str = "k"):
    """The cluster.<key> Clustering that cfg.method needs (k: the routed methods; k_importance: slm-is); when it
    has not been made, a ConfigError naming the method and the --cluster.<key> flag says how to make it."""
    from mlx_pn.clustering.stage import clusters_root, load_clustering, window_len

    k, window = getattr(cfg.cluster, key), window_len(cfg.cluster, cfg.pretrain.seq_len)
    try:
        return load_clustering(cfg.cluster, window, clusters_root(cfg.data_dir), k)
    except FileNotFoundError as e:
        why = "resamples generic windows" if key == "k_importance" else "routes windows"
        raise ConfigError(f"method {cfg.method} {why} by cluster: {e} (same --out/--data.dir and "
                          f"--cluster.{key} {k})") from None
