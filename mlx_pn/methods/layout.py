"""Where every method's stages write, and how a stage knows it has already finished.

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
from mlx_pn.costs import StageCost
from mlx_pn.fingerprint import check_same
from mlx_pn.io import write_json_atomic

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
    """OUT/specialize[-METHOD]/DOMAIN, or DOMAIN-NNNtok when fine-tuning on the first NNN domain tokens only."""
    name = f"{domain}-{domain_tokens}tok" if domain_tokens else domain
    return _stage_root(cfg, "specialize") / check_name(name, "domain")  # a folder under --out, nothing outside it


def as_method(cfg: Config, method: str) -> Config:
    """The same config for another method (slm-d reads slm's and llm's folders)."""
    return dataclasses.replace(cfg, method=method)


def finished(out: Path, steps: int, resume: bool, log, what: str, fingerprint: dict | None = None) -> dict | None:
    """The summary of a stage that already ran `steps` steps to the end, else None. fingerprint: what this
    command would train (mlx_pn.train.loop.run_fingerprint, or the keys of it known before the model is
    built); a finished run made with other values of those keys is a StaleRunError, not "already done"."""
    summary = out / "summary.json"
    if resume and summary.exists() and (out / "final" / "model.safetensors").exists():
        s = json.loads(summary.read_text())
        # "cost" is written with the summary once the stage is complete: without it the stage was killed
        # before its end (resuming from the final checkpoint writes both)
        if (s.get("steps") == steps or s.get("planned_steps") == steps) and "cost" in s:
            if fingerprint is not None:
                check_same(s.get("fingerprint"), fingerprint, f"[{what}] {out}")
            log(f"[{what}] already done ({out}); delete it to retrain")
            return s
    return None


def write_summary(out: Path, result, cost: StageCost | None = None, group=None, **extra) -> dict:
    """OUT/.../summary.json of one training run: the loop's result, then the stage's cost and extras.
    Written by the rank that wrote the run (rank 0 of `group`, the train() argument)."""
    from mlx_pn.train import distributed as dist

    summary = result.summary() | {"fingerprint": getattr(result, "fingerprint", {})}
    if cost is not None:
        summary.update(cost=cost.as_dict(), **extra)
    if dist.resolve(group)[1] == 0:
        write_json_atomic(out / "summary.json", summary)
    return summary


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
