"""The stage runner (mlx_pn.train.stage): a Stage trains once, says "already done" from its fingerprint, refuses a
finished run made otherwise; the selection table covers every config rule; the fine-tuning step-cap note."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from mlx_pn.config import SELECTS, TrainConfig
from mlx_pn.costs import StageCost
from mlx_pn.data.batches import PackedBatches
from mlx_pn.fingerprint import StaleRunError
from mlx_pn.methods.finetune import step_cap_note
from mlx_pn.methods.selection import SELECTORS
from mlx_pn.models.transformer import ModelArgs, Transformer
from mlx_pn.train import loop
from mlx_pn.train.stage import Stage, run_stage

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4, vocab_size=97)
TOKENS = np.random.default_rng(0).integers(0, 97, 4000).astype(np.uint16)


def _stage(out, fingerprint=None, **t):
    import mlx.core as mx

    def model():
        mx.random.seed(0)
        return Transformer(ARGS)

    cfg = TrainConfig(**({"steps": 4, "batch_size": 2, "seq_len": 16, "warmup": 1, "eval_every": 2, "eval_batches": 1,
                          "save_every": 2, "log_every": 1, "compile": False} | t))
    return Stage(out, "test stage", cfg, model=model, batches=lambda: PackedBatches(TOKENS[:3000], 16, 2, 0),
                 valid=lambda: (TOKENS[3000:], None), cost=lambda m, r: StageCost(float(r.tokens), r.tokens, r.wall_s),
                 after=lambda m: {"measured": 1}, fingerprint=fingerprint or {})


def test_a_stage_trains_once_then_is_already_done(tmp_path, monkeypatch):
    said = []
    s = run_stage(_stage(tmp_path / "run"), log=said.append)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["steps"] == 4 and on_disk["cost"]["tokens"] == 4 * 2 * 16 and on_disk["measured"] == 1
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()

    def no_training(*a, **k):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(loop, "train", no_training)
    again = run_stage(_stage(tmp_path / "run"), log=said.append)
    assert again == on_disk and any("already done" in line for line in said)


def test_a_finished_stage_made_otherwise_is_stale_not_done(tmp_path, monkeypatch):
    run_stage(_stage(tmp_path / "run", {"loss.alpha": 0.5}), log=lambda *a: None)
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained over a stale run"))
    with pytest.raises(StaleRunError, match="train.lr"):
        run_stage(_stage(tmp_path / "run", {"loss.alpha": 0.5}, lr=1e-2), log=lambda *a: None)
    with pytest.raises(StaleRunError, match="loss.alpha"):
        run_stage(_stage(tmp_path / "run", {"loss.alpha": 0.7}), log=lambda *a: None)


def test_every_config_selection_has_a_rule():
    assert set(SELECTORS) == set(SELECTS) - {"auto"}


def test_step_cap_note_only_while_validation_still_falls():
    t = TrainConfig(steps=8, batch_size=2, seq_len=16, grad_accum=1)
    batches = PackedBatches(TOKENS[:3000], 16, 2, 0)
    run = lambda **kw: SimpleNamespace(**({"stopped_by": "steps", "steps": 8, "best_step": 8} | kw))  # noqa: E731
    note = step_cap_note(run(), t, batches, "finetune legal")
    assert "--finetune.steps 0" in note and f"{batches.epochs(8, 1):.2f} epochs" in note
    per_epoch = 8 / batches.epochs(8, 1)
    assert f"one epoch is ~{per_epoch:,.0f} steps;" in note  # no metrics: steps only
    # with the run's measured speed: the epoch's time (median tokens/s of the logged windows)
    rows = [{"step": 1, "tokens_per_s": 10.0}, {"step": 2, "tokens_per_s": 320.0}, {"valid_nll": 3.0},
            {"step": 3, "tokens_per_s": 330.0}]
    note = step_cap_note(run(history=rows), t, batches, "finetune legal")
    assert f"one epoch is ~{per_epoch:,.0f} steps, ~{per_epoch * 32 / 320 / 60:.1f} min at this run's 320 tokens/s" \
        in note, note
    assert step_cap_note(run(best_step=4), t, batches, "x") is None  # validation had turned
    assert step_cap_note(run(stopped_by="early stopping"), t, batches, "x") is None
    assert step_cap_note(run(stopped_by="max_epochs"), t, batches, "x") is None
