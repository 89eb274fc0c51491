"""Shared fixtures: one tiny prepared dataset and one tiny pretrained model per test session.

MLX_DISABLE_COMPILE=1: CPU mx.compile shells out to g++ (tens of seconds cold); the compiled and
uncompiled steps compute the same thing, and tests stay fast. mlx_pn is imported before any test
module imports mlx.core, so the optimized BLAS is in place.

The fast inner loop is `pytest -m "not slow"` (the `slow` marker: pyproject.toml, docs/testing.md).
"""

import os

os.environ.setdefault("MLX_DISABLE_COMPILE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import mlx_pn  # noqa: E402,F401
import pytest  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "configs" / "tiny.yaml"


def tiny_config(out, **overrides):
    from mlx_pn.methods import load_config

    ov = {"out": str(out), "data.max_docs": "300", "pretrain.steps": "40", "finetune.steps": "20"}
    ov.update({k: str(v) for k, v in overrides.items()})
    return load_config(TINY, ov)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(cfg, prepared data) for a tiny run on the bundled real text."""
    from mlx_pn.data.prepare import prepare_data

    cfg = tiny_config(tmp_path_factory.mktemp("tiny"))
    data = prepare_data(cfg, log=lambda *a: None)
    return cfg, data


@pytest.fixture(scope="session")
def pretrained(tiny_run):
    """(cfg, data, summary) after a 40-step tiny pretraining."""
    from mlx_pn.methods import pretrain

    cfg, data = tiny_run
    summary = pretrain(cfg, data, log=lambda *a: None)
    return cfg, data, summary


@pytest.fixture(scope="session")
def clustered(tiny_run):
    """(cfg, data) of tiny_run with its k = 4 clustering on disk (what the routed methods and slm-is read)."""
    from mlx_pn.clustering.stage import clusters_root, run_clustering, window_len

    cfg, data = tiny_run
    run_clustering(cfg.cluster, window_len(cfg.cluster, cfg.pretrain.seq_len), clusters_root(cfg.data_dir), data,
                   ks=[4], log=lambda *a: None)
    return tiny_run
