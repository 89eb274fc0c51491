"""train.precision: bf16 (or fp16) compute over fp32 master weights and optimizer state (mlx_pn.train.loop).

On the CPU of the tests, on the tiny preset and the bundled real text. MLX's CPU bf16 matmul is slow (no BLAS),
which is why `auto` means fp32 there; the numerics are the same on a GPU.
"""

import json
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.config import ConfigError, TrainConfig
from mlx_pn.data.batches import PackedBatches
from mlx_pn.models.build import PRESETS, build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.checkpoint import list_checkpoints
from mlx_pn.train.loop import train
from mlx_pn.train.step import compute_dtype

from conftest import REPO


def tiny(vocab, seed=0):
    return build_model(ModelArgs(**PRESETS["tiny"], vocab_size=vocab), seed=seed)


def tcfg(**kw):
    d = dict(steps=50, batch_size=4, seq_len=32, lr=3e-3, warmup=5, eval_every=1000, save_every=1000, log_every=1,
             compile=False)
    return TrainConfig(**(d | kw))


def losses(r):
    return np.array([h["loss"] for h in r.history if "loss" in h])


def weights(m):
    return {k: np.array(v) for k, v in tree_flatten(m.parameters())}


def test_precision_option_resolves_and_is_checked():
    assert compute_dtype("auto") == mx.float32  # the tests run on a CPU: auto = fp32 there
    assert [compute_dtype(p) for p in ("fp32", "bf16", "fp16")] == [mx.float32, mx.bfloat16, mx.float16]
    with pytest.raises(ConfigError, match=r"finetune.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        TrainConfig(precision="fp8").check("finetune")


@pytest.mark.slow
def test_bf16_losses_track_fp32_over_50_steps(tiny_run, tmp_path):
    """The same 50 steps (tiny preset, B=4, L=32, lr 3e-3) in fp32 and bf16 from the same init and batches.

    Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per weight/activation); the loss is a
    mean over 128 tokens, which averages those errors, and the fp32 master weights keep each step's small updates
    (a pure-bf16 weight would round an update of lr * 1e-3 away). Measured: max |loss_bf16 - loss_fp32| = 7.4e-4
    (seed 0) and 5.5e-4 (seed 1) over the 50 steps (losses ~6). Asserted: < 5e-3 at every step (~7x margin, under
    1e-3 of the loss), and > 1e-6 somewhere, so the bf16 run really computed in bf16."""
    _, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    V = data.tokenizer.vocab_size
    runs = {}
    for p in ("fp32", "bf16"):
        m = tiny(V)
        runs[p] = (m, train(m, tcfg(precision=p), PackedBatches(toks, 32, 4, 0), tmp_path / p, log=lambda *a: None))
    d = np.abs(losses(runs["bf16"][1]) - losses(runs["fp32"][1]))
    assert len(d) == 50 and d.max() < 5e-3 and d.max() > 1e-6, d
    first, last = losses(runs["bf16"][1])[[0, -1]]
    assert last < first - 0.5  # it trained
    # master weights and optimizer state stay fp32; checkpoints hold them
    assert {v.dtype for v in weights(runs["bf16"][0]).values()} == {np.dtype("float32")}
    ckpt = mx.load(str(list_checkpoints(tmp_path / "bf16" / "checkpoints")[-1] / "optimizer.safetensors"))
    assert {v.dtype for k, v in ckpt.items() if v.ndim > 0} == {mx.float32}


class _Stop(Exception):
    pass


class _Interrupt:
    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def __getattr__(self, name):  # tokens etc.: the same run fingerprint as the uninterrupted source
        return getattr(self.inner, name)

    def batch(self, step, micro=1):
        if step >= self.at - 1:
            raise _Stop()
        return self.inner.batch(step, micro)


def test_bf16_resume_is_bit_identical(tiny_run, tmp_path):
    """bf16 run of 16 steps vs the same run killed after its step-8 checkpoint and resumed in a new model object:
    equal losses at every step and bit-identical final weights (the master weights are what is saved)."""
    _, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    V = data.tokenizer.vocab_size
    cfg = tcfg(steps=16, save_every=8, precision="bf16")
    full = tiny(V)
    r_full = train(full, cfg, PackedBatches(toks, 32, 4, 1), tmp_path / "full", log=lambda *a: None)
    with pytest.raises(_Stop):
        train(tiny(V), cfg, _Interrupt(PackedBatches(toks, 32, 4, 1), at=10), tmp_path / "part", log=lambda *a: None)
    assert [p.name for p in list_checkpoints(tmp_path / "part" / "checkpoints")] == ["step_0000008"]
    resumed = tiny(V)
    r_res = train(resumed, cfg, PackedBatches(toks, 32, 4, 1), tmp_path / "part", log=lambda *a: None)
    rows = lambda r: [(h["step"], h["loss"]) for h in r.history if "loss" in h]  # noqa: E731
    assert rows(r_res) == rows(r_full) and len(rows(r_full)) == 16
    wf, wr = weights(full), weights(resumed)
    assert wf.keys() == wr.keys() and all(np.array_equal(wf[k], wr[k]) for k in wf)


def test_bf16_trained_model_exports_in_float32_and_bfloat16(tiny_run, tmp_path):
    from mlx_lm import load

    from mlx_pn.export import export_mlx_lm

    _, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    m = tiny(data.tokenizer.vocab_size)
    train(m, tcfg(steps=10, precision="bf16"), PackedBatches(toks, 32, 4, 0), tmp_path / "run", log=lambda *a: None)
    tok = data.tokenizer.hf_dir
    r32 = export_mlx_lm(m, tok, tmp_path / "f32")  # verified: within 1e-4 of our fp32 logits
    assert r32["max_abs_logit_diff"] <= 1e-5
    r16 = export_mlx_lm(m, tok, tmp_path / "bf16", dtype="bfloat16")  # verified against our model in bf16
    assert r16["max_abs_logit_diff"] <= 1e-4 and r16["argmax_agreement_vs_float32"] > 0.9, r16
    lm, _ = load(str(tmp_path / "bf16"))
    assert {v.dtype for _, v in tree_flatten(lm.parameters())} == {mx.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"


# make_step(compile=True) in bf16, really compiled: a child process without MLX_DISABLE_COMPILE (conftest sets it
# here), against the eager bf16 step of this process (the pattern of test_train.test_compiled_step_matches_eager).
COMPILED_BF16 = """
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

def run(compile, dtype=mx.bfloat16):
    model = build_model(ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4,
                                  vocab_size=V), seed=0)
    cfg = TrainConfig(steps=STEPS, batch_size=B, seq_len=L, grad_accum=A, lr=1e-2, warmup=2, grad_clip=0.5)
    opt = make_optimizer(cfg)
    opt.init(model.trainable_parameters())
    step = make_step(model, opt, cross_entropy, cfg.grad_accum, cfg.grad_clip, compile, dtype=dtype)
    rng = np.random.default_rng(0)
    start = rng.integers(0, V, (STEPS, A, B, 1))
    batches = ((start + np.arange(L + 1) + (rng.random((STEPS, A, B, L + 1)) < 0.1)) % V).astype(np.int32)
    losses, gnorms = [], []
    for batch in batches:
        loss, gnorm = step(mx.array(batch))
        mx.eval(loss, gnorm, model.state, opt.state)
        losses.append(loss.item())
        gnorms.append(gnorm.item())
    weights = {k: np.array(v).tolist() for k, v in tree_flatten(model.parameters())}
    return {"losses": losses, "gnorms": gnorms, "weights": weights,
            "dtypes": sorted({str(v.dtype) for _, v in tree_flatten(model.parameters())}),
            "compiled_wrapper": type(step) is type(mx.compile(lambda x: x)),
            "disable_compile_env": "MLX_DISABLE_COMPILE" in os.environ}

if __name__ == "__main__":
    print("RESULT " + json.dumps(run(compile=True)))
"""


@pytest.mark.slow
def test_compiled_bf16_step_matches_eager(tmp_path):
    """Tolerance: the tolerances of the fp32 test (test_train.test_compiled_step_matches_eager: the compiled graph
    fuses element-wise work and the loss's exp): losses and gradient norms within 2e-6 relative, weights within
    1e-6 after 6 steps. Measured here: identical (0.0) losses, norms and weights. bf16 vs fp32 on the same 6 steps:
    losses 2.6e-4 relative, weights 6.4e-3 apart, so a step that silently ran fp32 would fail."""
    script = tmp_path / "compiled_bf16.py"
    script.write_text(COMPILED_BF16)
    env = {k: v for k, v in os.environ.items() if k != "MLX_DISABLE_COMPILE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    ns: dict = {}
    exec(compile(COMPILED_BF16, str(script), "exec"), ns)
    ref, f32 = ns["run"](compile=False), ns["run"](compile=False, dtype=mx.float32)
    assert not got["disable_compile_env"] and got["compiled_wrapper"]
    assert got["dtypes"] == ref["dtypes"] == ["mlx.core.float32"]  # master weights
    assert ref["losses"][-1] < ref["losses"][0] - 0.05, ref["losses"]
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=2e-6)
    np.testing.assert_allclose(got["gnorms"], ref["gnorms"], rtol=2e-6)
    for k, w in ref["weights"].items():
        np.testing.assert_allclose(np.array(got["weights"][k]), np.array(w), rtol=0, atol=1e-6, err_msg=k)
    # the compiled bf16 step is not an fp32 one: fp32 lands far outside those tolerances
    w_gap = max(np.abs(np.array(f32["weights"][k]) - np.array(w)).max() for k, w in ref["weights"].items())
    assert w_gap > 1e-4, w_gap
