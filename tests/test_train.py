import json
import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.config import TrainConfig
from mlx_pn.data.batches import PackedBatches
from mlx_pn.models.transformer import ModelArgs, build_model
from mlx_pn.train.checkpoint import list_checkpoints
from mlx_pn.train.loop import TrainingError, train
from mlx_pn.train.optim import lr_schedule, no_decay


def small_model(vocab, seed=0):
    return build_model(ModelArgs(hidden_size=48, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                                 vocab_size=vocab), seed=seed)


def tcfg(**kw):
    d = dict(steps=20, batch_size=4, seq_len=32, lr=3e-3, min_lr=3e-4, warmup=3, eval_every=10, eval_batches=2,
             save_every=5, log_every=1, compile=False)
    d.update(kw)
    return TrainConfig(**d)


def weights(m):
    return {k: np.array(v) for k, v in tree_flatten(m.parameters())}


def test_loss_falls_on_real_text(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    model = small_model(data.tokenizer.vocab_size)
    r = train(model, tcfg(steps=30), PackedBatches(toks, 32, 4, 0), tmp_path,
              valid_tokens=data.corpora["generic"].tokens("valid"), log=lambda *a: None)
    losses = [h["loss"] for h in r.history if "loss" in h]
    valid = [h["valid_nll"] for h in r.history if "valid_nll" in h]
    assert np.mean(losses[-5:]) < losses[0] - 0.4, losses
    assert valid[-1] < valid[0] - 0.4
    assert (tmp_path / "final" / "model.safetensors").exists() and json.loads((tmp_path / "summary.json").read_text())


def test_resume_equals_uninterrupted(tiny_run, tmp_path):
    """Stop at step 10, resume to 20: identical losses and bit-identical weights."""
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    valid = data.corpora["generic"].tokens("valid")
    quiet = dict(valid_tokens=valid, log=lambda *a: None)

    full = small_model(data.tokenizer.vocab_size)
    r_full = train(full, tcfg(), PackedBatches(toks, 32, 4, 1), tmp_path / "full", **quiet)

    part = small_model(data.tokenizer.vocab_size)
    # Run 10 steps of the same 20-step schedule (a crash after the step-10 checkpoint) ...
    with pytest.raises(_Stop):
        train(part, tcfg(save_every=10), _Interrupt(PackedBatches(toks, 32, 4, 1), at=12), tmp_path / "part", **quiet)
    assert [p.name for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == ["step_0000010"]
    # ... then a fresh process-like start: new model object, resume from the checkpoint.
    resumed = small_model(data.tokenizer.vocab_size, seed=99)
    r_res = train(resumed, tcfg(save_every=10), PackedBatches(toks, 32, 4, 1), tmp_path / "part", **quiet)

    loss = lambda r: [(h["step"], h["loss"]) for h in r.history if "loss" in h]  # noqa: E731
    assert loss(r_res) == loss(r_full)
    wf, wr = weights(full), weights(resumed)
    assert all(np.array_equal(wf[k], wr[k]) for k in wf)


class _Stop(Exception):
    pass


class _Interrupt:
    """Batches that raise when step `at` is requested (simulates a crash mid-run)."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def batch(self, step, micro=1):
        if step >= self.at - 1:
            raise _Stop()
        return self.inner.batch(step, micro)


def test_grad_accumulation_equals_big_batch(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    a, b = small_model(data.tokenizer.vocab_size), small_model(data.tokenizer.vocab_size)
    train(a, tcfg(steps=3, batch_size=8), PackedBatches(toks, 32, 8, 0), tmp_path / "a", log=lambda *x: None)
    train(b, tcfg(steps=3, batch_size=4, grad_accum=2), PackedBatches(toks, 32, 4, 0), tmp_path / "b",
          log=lambda *x: None)
    wa, wb = weights(a), weights(b)
    assert max(np.abs(wa[k] - wb[k]).max() for k in wa) < 1e-5


def test_compiled_step_matches_eager(tiny_run, tmp_path, monkeypatch):
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    a, b = small_model(data.tokenizer.vocab_size), small_model(data.tokenizer.vocab_size)
    ra = train(a, tcfg(steps=3), PackedBatches(toks, 32, 4, 0), tmp_path / "a", log=lambda *x: None)
    rb = train(b, tcfg(steps=3, compile=True), PackedBatches(toks, 32, 4, 0), tmp_path / "b", log=lambda *x: None)
    la = [h["loss"] for h in ra.history if "loss" in h]
    lb = [h["loss"] for h in rb.history if "loss" in h]
    assert np.allclose(la, lb, atol=1e-5)


def test_corrupted_checkpoint_falls_back_to_previous(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    m = small_model(data.tokenizer.vocab_size)
    train(m, tcfg(steps=10, save_every=5, keep_checkpoints=3), PackedBatches(toks, 32, 4, 0), tmp_path,
          log=lambda *a: None)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    with open(newest / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00garbage\x00")
    messages = []
    with pytest.warns(RuntimeWarning, match="sha256 mismatch"):
        train(small_model(data.tokenizer.vocab_size), tcfg(steps=10, save_every=5), PackedBatches(toks, 32, 4, 0),
              tmp_path, log=messages.append)
    assert any("step_0000005" in s for s in messages)


def test_non_finite_loss_names_step_and_checkpoint(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")

    def nan_after_some_steps(model, x, y):
        from mlx_pn.train.losses import cross_entropy

        return cross_entropy(model, x, y) * mx.where(mx.sum(model.model.norm.weight) > -1, mx.nan, 1.0)

    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 1 \(batch index 0\); last good checkpoint"):
        train(small_model(data.tokenizer.vocab_size), tcfg(steps=5), PackedBatches(toks, 32, 4, 0), tmp_path,
              loss_fn=nan_after_some_steps, log=lambda *a: None)


def test_early_stopping_keeps_best_weights(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["legal"].tokens("train")
    m = small_model(data.tokenizer.vocab_size)
    # A huge constant lr makes validation loss get worse after the first evaluations.
    r = train(m, tcfg(steps=60, lr=0.3, min_lr=0.3, warmup=0, eval_every=2, patience=2, grad_clip=0),
              PackedBatches(toks, 32, 4, 0), tmp_path, valid_tokens=data.corpora["legal"].tokens("valid"),
              log=lambda *a: None)
    assert r.stopped_early and r.steps < 60
    from mlx_pn.train.evaluate import nll

    got = nll(m, data.corpora["legal"].tokens("valid"), 32, 4, 8)["nll"]
    assert math.isclose(got, r.best_valid_nll, rel_tol=1e-5)


def test_schedule_and_decay_groups():
    s = lr_schedule(TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup=10))
    assert float(s(mx.array(0))) == 0.0 and abs(float(s(mx.array(10))) - 1.0) < 1e-6
    assert abs(float(s(mx.array(100))) - 0.1) < 1e-6
    assert no_decay("model.norm.weight", None) and no_decay("model.embed_tokens.weight", None)
    assert not no_decay("model.layers.0.mlp.up_proj.weight", None)


def test_resuming_with_another_architecture_names_the_folder(tmp_path):
    from mlx_pn.config import TrainConfig
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.models.transformer import ModelArgs, build_model
    from mlx_pn.train.checkpoint import CheckpointError
    from mlx_pn.train.loop import train

    tokens = np.random.default_rng(0).integers(0, 97, 4000).astype(np.int32)
    t = TrainConfig(steps=2, batch_size=4, seq_len=16, warmup=1, save_every=1, eval_every=100, compile=False)
    args = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, vocab_size=97)
    train(build_model(ModelArgs(intermediate_size=64, **args)), t, PackedBatches(tokens, 16, 4), tmp_path,
          log=lambda *a: None)
    t.steps = 4
    with pytest.raises(CheckpointError, match="another shape or kind"):
        train(build_model(ModelArgs(intermediate_size=32, **args)), t, PackedBatches(tokens, 16, 4), tmp_path,
              log=lambda *a: None)
