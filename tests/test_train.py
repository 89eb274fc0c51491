import json
import math
import os
import shutil
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.config import TrainConfig
from mlx_pn.data.batches import PackedBatches
from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.checkpoint import list_checkpoints
from mlx_pn.train.loop import RunOptions, train
from mlx_pn.train.state import TrainingError, TrainResult, TrainState
from mlx_pn.train.optim import lr_schedule, no_decay

from conftest import REPO


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
              RunOptions(valid_tokens=data.corpora["generic"].tokens("valid")), log=lambda *a: None)
    losses = [h["loss"] for h in r.history if "loss" in h]
    valid = [h["valid_nll"] for h in r.history if "valid_nll" in h]
    assert np.mean(losses[-5:]) < losses[0] - 0.4, losses
    assert valid[-1] < valid[0] - 0.4
    assert (tmp_path / "final" / "model.safetensors").exists()
    assert not (tmp_path / "summary.json").exists()  # the stage writes it, from r.summary() plus its cost
    s = r.summary()
    assert list(s)[:10] == ["steps", "final_loss", "best_valid_nll", "best_step", "stopped_early", "tokens",
                            "wall_s", "data_wait_s", "planned_steps", "stopped_by"]
    assert (s["steps"], s["final_loss"], s["tokens"]) == (30, losses[-1], 30 * 4 * 32)
    assert (s["planned_steps"], s["stopped_by"]) == (30, "steps")
    assert s["best_valid_nll"] == min(valid) and s["data_wait_s"] >= 0 and not s["stopped_early"]


def test_resume_equals_uninterrupted(tiny_run, tmp_path):
    """Stop at step 10, resume to 20: identical losses and bit-identical weights."""
    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    valid = data.corpora["generic"].tokens("valid")
    quiet = dict(run=RunOptions(valid_tokens=valid), log=lambda *a: None)

    full = small_model(data.tokenizer.vocab_size)
    r_full = train(full, tcfg(), PackedBatches(toks, 32, 4, 1), tmp_path / "full", **quiet)

    part = small_model(data.tokenizer.vocab_size)
    # Run 10 steps of the same 20-step schedule (a crash after the step-10 checkpoint) ...
    with pytest.raises(_Stop):
        train(part, tcfg(save_every=10), _Interrupt(PackedBatches(toks, 32, 4, 1), at=12), tmp_path / "part", **quiet)
    assert [p.name for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == ["step_0000010"]
    state_json = tmp_path / "part" / "checkpoints" / "step_0000010" / "state.json"
    saved = json.loads(state_json.read_text())
    at10 = {k: v for h in r_full.history if h["step"] == 10 for k, v in h.items()}  # step 10's loss and eval
    assert saved["trainer"] == {"step": 10, "best_valid_nll": at10["valid_nll"], "best_step": 10, "bad_evals": 0,
                                "tokens": 10 * 4 * 32, "last_loss": at10["loss"], "stopped_early": False}
    # The same checkpoint as the code before TrainState wrote it: no "step", no "stopped_early" (set only
    # once true); an unknown key is ignored.
    shutil.copytree(tmp_path / "part", tmp_path / "old-format")
    old = {k: v for k, v in saved["trainer"].items() if k not in ("step", "stopped_early")} | {"future": 1}
    (tmp_path / "old-format" / "checkpoints" / "step_0000010" / "state.json").write_text(
        json.dumps(saved | {"trainer": old}))
    # ... then a fresh process-like start: new model object, resume from the checkpoint.
    resumed = small_model(data.tokenizer.vocab_size, seed=99)
    r_res = train(resumed, tcfg(save_every=10), PackedBatches(toks, 32, 4, 1), tmp_path / "part", **quiet)
    resumed_old = small_model(data.tokenizer.vocab_size, seed=98)
    r_old = train(resumed_old, tcfg(save_every=10), PackedBatches(toks, 32, 4, 1), tmp_path / "old-format", **quiet)

    loss = lambda r: [(h["step"], h["loss"]) for h in r.history if "loss" in h]  # noqa: E731
    assert loss(r_res) == loss(r_full) and loss(r_old) == loss(r_full)
    assert r_res.summary() | {"wall_s": 0, "data_wait_s": 0} == r_full.summary() | {"wall_s": 0, "data_wait_s": 0}
    assert r_old.summary() | {"wall_s": 0, "data_wait_s": 0} == r_full.summary() | {"wall_s": 0, "data_wait_s": 0}
    wf, wr, wo = weights(full), weights(resumed), weights(resumed_old)
    assert all(np.array_equal(wf[k], wr[k]) and np.array_equal(wf[k], wo[k]) for k in wf)


def test_train_state_from_dict_and_eval_bookkeeping():
    old = {"best_valid_nll": 3.5, "best_step": 40, "bad_evals": 1, "tokens": 2**40 + 3, "last_loss": 3.25,
           "some_future_key": [1]}
    s = TrainState.from_dict(old | {"step": 50})
    assert s == TrainState(step=50, best_valid_nll=3.5, best_step=40, bad_evals=1, tokens=2**40 + 3, last_loss=3.25)
    assert TrainState.from_dict({}) == TrainState() and TrainState().last_loss is None
    assert not s.record_eval(60, 3.5 - 1e-7) and s.bad_evals == 2  # within 1e-6 of the best: not better
    assert s.record_eval(70, 3.4) and (s.best_valid_nll, s.best_step, s.bad_evals) == (3.4, 70, 0)
    r = TrainResult(steps=1, final_loss=2.0, best_valid_nll=None, best_step=None, stopped_early=False, tokens=8,
                    wall_s=0.5, data_wait_s=0.1, planned_steps=1, stopped_by="steps", history=[{"step": 1}])
    assert r.summary() == {"steps": 1, "final_loss": 2.0, "best_valid_nll": None, "best_step": None,
                           "stopped_early": False, "tokens": 8, "wall_s": 0.5, "data_wait_s": 0.1,
                           "planned_steps": 1, "stopped_by": "steps"}


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


# The step production runs (make_step(..., compile=True)), several steps with grad accumulation and clipping.
# Run with `compile` in a child process without MLX_DISABLE_COMPILE, and eagerly in this one (conftest sets it).
COMPILED_STEP = """
import os, sys, json
import mlx_pn  # BLAS set-up before mlx.core
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_pn.config import TrainConfig
from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.step import make_step
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.optim import make_optimizer

STEPS, A, B, L, V = 6, 2, 4, 16, 61

def run(compile):
    model = build_model(ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4,
                                  vocab_size=V), seed=0)
    cfg = TrainConfig(steps=STEPS, batch_size=B, seq_len=L, grad_accum=A, lr=1e-2, warmup=2, grad_clip=0.5)
    opt = make_optimizer(cfg)
    opt.init(model.trainable_parameters())
    calls = []

    def loss_fn(m, x, y):
        calls.append(1)  # Python code: runs on every call eagerly, only while tracing when compiled
        return cross_entropy(m, x, y)

    step = make_step(model, opt, loss_fn, cfg.grad_accum, cfg.grad_clip, compile)
    rng = np.random.default_rng(0)
    # a learnable stream (x -> x + 1 mod V, with noise): the updates matter for the later losses
    start = rng.integers(0, V, (STEPS, A, B, 1))
    batches = ((start + np.arange(L + 1) + (rng.random((STEPS, A, B, L + 1)) < 0.1)) % V).astype(np.int32)
    losses, gnorms = [], []
    for batch in batches:  # (A, B, L + 1)
        loss, gnorm = step(mx.array(batch))
        mx.eval(loss, gnorm, model.state, opt.state)
        losses.append(loss.item())
        gnorms.append(gnorm.item())
    weights = {k: np.array(v).tolist() for k, v in tree_flatten(model.parameters())}
    return {"losses": losses, "gnorms": gnorms, "calls": len(calls), "weights": weights,
            "compiled_wrapper": type(step) is type(mx.compile(lambda x: x)),
            "disable_compile_env": "MLX_DISABLE_COMPILE" in os.environ}

if __name__ == "__main__":
    print("RESULT " + json.dumps(run(compile=True)))
"""


@pytest.mark.slow
def test_compiled_step_matches_eager(tmp_path):
    """make_step(compile=True), really compiled (child process: the first compile runs g++, tens of seconds),
    against the eager step of this session, over 6 steps of 2 micro-batches with the gradient clipped.

    Tolerance: the compiled graph fuses element-wise work and the loss uses the fused exp (relative error
    ~2e-7) instead of mx.exp; measured: losses 1.2e-7 relative, weights 1.2e-7 absolute. Asserted: losses and
    gradient norms within 2e-6 relative, weights within 1e-6 absolute after 6 AdamW steps of lr <= 1e-2 (an
    update of ~lr per element: 1e-6 is 1e-4 of one step's change)."""
    script = tmp_path / "compiled_step.py"
    script.write_text(COMPILED_STEP)
    env = {k: v for k, v in os.environ.items() if k != "MLX_DISABLE_COMPILE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    ns: dict = {}
    exec(compile(COMPILED_STEP, str(script), "exec"), ns)
    ref = ns["run"](compile=False)

    # compilation really happened in the child: compile on, a compiled function, traced once (A loss calls in all)
    assert not got["disable_compile_env"] and got["compiled_wrapper"]
    assert got["calls"] == 2 and ref["calls"] == 6 * 2, (got["calls"], ref["calls"])
    assert min(ref["gnorms"]) > 0.5  # every step clipped
    assert ref["losses"][-1] < ref["losses"][0] - 0.05, ref["losses"]  # the updates changed the model
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=2e-6)
    np.testing.assert_allclose(got["gnorms"], ref["gnorms"], rtol=2e-6)
    for k, w in ref["weights"].items():
        np.testing.assert_allclose(np.array(got["weights"][k]), np.array(w), rtol=0, atol=1e-6, err_msg=k)


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
              RunOptions(loss_fn=nan_after_some_steps), log=lambda *a: None)


def test_early_stopping_keeps_best_weights(tiny_run, tmp_path):
    cfg, data = tiny_run
    toks = data.corpora["legal"].tokens("train")
    m = small_model(data.tokenizer.vocab_size)
    # A huge constant lr makes validation loss get worse after the first evaluations.
    r = train(m, tcfg(steps=60, lr=0.3, min_lr=0.3, warmup=0, eval_every=2, patience=2, grad_clip=0),
              PackedBatches(toks, 32, 4, 0), tmp_path, RunOptions(valid_tokens=data.corpora["legal"].tokens("valid")),
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
    from mlx_pn.models.build import build_model
    from mlx_pn.models.transformer import ModelArgs
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


def test_step_loop_reports_each_step_to_the_callbacks_in_order():
    """The loop alone (a stand-in step, no model): the hooks of every step in order, the train loss every
    log_every steps and at the end, validations every eval_every steps, early stopping after `patience` of them
    without a new best; the state is updated in place."""
    from types import SimpleNamespace

    import mlx.optimizers as optim

    from mlx_pn.train.callbacks import TrainingCallback
    from mlx_pn.train.loop import step_loop

    cfg = TrainConfig(steps=12, batch_size=2, seq_len=4, log_every=2, eval_every=3, patience=1)
    seen = []

    class Record(TrainingCallback):
        def on_step(self, state, batch_index):
            seen.append(("step", state.step, batch_index))

        def on_train_loss_report(self, info):
            seen.append(("train", info["step"], info["loss"]))

        def on_val_loss_report(self, info):
            seen.append(("val", info["step"], info["new_best"]))

        def on_step_end(self, state):
            seen.append(("end", state.step, state.stopped_early))

    class Source:
        wait_s, i = 0.0, -1

        def get(self):
            self.i += 1
            return self.i, np.zeros((1, 2, 5), np.int32)

    state, callbacks = TrainState(), [Record()]

    def validate(step):  # worse at every evaluation: the first is the best
        info = {"step": step, "new_best": state.record_eval(step, float(step))}
        for c in callbacks:
            c.on_val_loss_report(info)

    step_fn = lambda tokens: (mx.array(0.5 * state.step), mx.array(1.0))  # noqa: E731
    step_loop(SimpleNamespace(state={}), optim.SGD(learning_rate=0.1), step_fn, Source(), cfg, state, validate,
              callbacks)
    assert seen == [("step", 1, 0), ("end", 1, False),
                    ("step", 2, 1), ("train", 2, 0.5), ("end", 2, False),
                    ("step", 3, 2), ("val", 3, True), ("end", 3, False),
                    ("step", 4, 3), ("train", 4, 1.5), ("end", 4, False),
                    ("step", 5, 4), ("end", 5, False),
                    ("step", 6, 5), ("train", 6, 2.5), ("val", 6, False), ("end", 6, True)]
    assert (state.step, state.tokens, state.best_step, state.stopped_early) == (6, 6 * 2 * 4, 3, True)


def test_train_runs_the_step_the_compiled_step_test_checks(tiny_run, tmp_path, monkeypatch):
    """train() steps with train.step.make_step (what test_compiled_step_matches_eager compiles) and hands it
    cfg.compile; the spy runs it eagerly here (the first compile costs tens of seconds)."""
    import mlx_pn.train.loop as loop
    from mlx_pn.train import step

    assert loop.make_step is step.make_step
    seen = []

    def spy(model, optimizer, loss_fn, micro_batches, grad_clip, compile, group=None, dtype=mx.float32):
        seen.append(compile)
        return step.make_step(model, optimizer, loss_fn, micro_batches, grad_clip, False, group, dtype)

    monkeypatch.setattr(loop, "make_step", spy)
    _, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    r = train(small_model(data.tokenizer.vocab_size), tcfg(steps=2, compile=True), PackedBatches(toks, 32, 4, 0),
              tmp_path, log=lambda *a: None)
    assert seen == [True] and r.steps == 2
