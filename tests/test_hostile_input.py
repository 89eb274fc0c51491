"""A hostile user and a hostile environment (issue 15, part B): every bad number, a model too large for memory,
an export that must not lie, Ctrl-C / SIGTERM, a full or read-only disk, one 50 MB line. Each case is one clear
line (naming the key or the folder, the value and the fix) or correct behaviour, never a traceback."""

from __future__ import annotations

import pytest

from mlx_pn.config import ConfigError
from mlx_pn.methods import load_config

from conftest import TINY

# --- 1. every numeric field validated at load -------------------------------------------------------

NUMERIC_CASES = {
    "eval_every 0": ({"pretrain.eval_every": "0"}, r"pretrain.eval_every must be >= 1, got 0; it is a period"),
    "save_every 0": ({"finetune.save_every": "0"}, r"finetune.save_every must be >= 1, got 0"),
    "log_every 0": ({"pretrain.log_every": "0"}, r"pretrain.log_every must be >= 1, got 0"),
    "warmup -5": ({"pretrain.warmup": "-5"}, r"pretrain.warmup must be >= 0, got -5"),
    "beta1 nan": ({"pretrain.beta1": "nan"}, r"pretrain.beta1 must be in \[0, 1\), got nan"),
    "beta2 1": ({"finetune.beta2": "1"}, r"finetune.beta2 must be in \[0, 1\), got 1.0"),
    "eps -1": ({"pretrain.eps": "-1"}, r"pretrain.eps must be a finite number > 0, got -1.0"),
    "eps 0": ({"pretrain.eps": "0"}, r"pretrain.eps must be a finite number > 0, got 0.0"),
    "grad_clip nan": ({"pretrain.grad_clip": "nan"}, r"pretrain.grad_clip must be a finite number >= 0, got nan; 0 turns"),
    "grad_clip inf": ({"pretrain.grad_clip": "inf"}, r"pretrain.grad_clip must be a finite number >= 0, got inf"),
    "min_lr nan": ({"pretrain.min_lr": "nan"}, r"pretrain.min_lr must be a finite number >= 0, got nan"),
    "weight_decay nan": ({"finetune.weight_decay": "nan"}, r"finetune.weight_decay must be a finite number >= 0"),
    "weight_decay -1": ({"pretrain.weight_decay": "-1"}, r"pretrain.weight_decay must be a finite number >= 0"),
    "temperature nan": ({"distill.temperature": "nan"}, r"distill.temperature must be a finite number > 0, got nan"),
    "temperature 0": ({"distill.temperature": "0"}, r"distill.temperature > 0"),
    "hidden_size 0": ({"model.hidden_size": "0"}, r"model.hidden_size must be >= 1, got 0"),
    "heads 0": ({"model.num_attention_heads": "0"}, r"model.num_attention_heads must be >= 1, got 0"),
    "layers 0": ({"large.num_hidden_layers": "0"}, r"large.num_hidden_layers must be >= 1, got 0"),
    "hidden not divisible by the preset's heads": (
        {"model.hidden_size": "65"}, r"model.hidden_size=65 must be divisible by model.num_attention_heads=4 "
                                     r"\(preset 'tiny' \+ overrides\)"),
    "large hidden not divisible": ({"large.hidden_size": "130"}, r"large.hidden_size=130 must be divisible"),
    "kv heads not dividing heads": ({"model.num_key_value_heads": "3"},
                                    r"model.num_attention_heads=4 must be a multiple of model.num_key_value_heads=3"),
    "cluster.k 0": ({"cluster.k": "0"}, r"cluster.k and cluster.k_importance must be >= 1"),
    "cluster.fit_windows 0": ({"cluster.fit_windows": "0"}, r"cluster.fit_windows must be >= 1, got 0"),
    "cluster.batch_size 0": ({"cluster.batch_size": "0"}, r"cluster.batch_size must be >= 1, got 0"),
    "cluster.window -5": ({"cluster.window": "-5"}, r"cluster.window must be >= 0, got -5"),
    "seq_len past the model's positions": (
        {"pretrain.seq_len": "40000"}, r"pretrain.seq_len=40000 is longer than model.max_position_embeddings=256 "
                                       r"\(preset 'tiny'\); lower pretrain.seq_len"),
    "finetune seq_len past the positions": ({"finetune.seq_len": "257"}, r"finetune.seq_len=257 is longer than"),
    "rope_theta nan": ({"model.rope_theta": "nan"}, r"model.rope_theta must be a finite number > 0"),
    "tokenizer sample 0 MB": ({"data.tokenizer_sample_mb": "0"}, r"data.tokenizer_sample_mb must be a finite"),
}


@pytest.mark.parametrize("case", list(NUMERIC_CASES), ids=list(NUMERIC_CASES))
def test_numeric_fields_checked_at_load(case):
    overrides, match = NUMERIC_CASES[case]
    with pytest.raises(ConfigError, match=match) as e:
        load_config(TINY, overrides)
    assert "\n" not in str(e.value)


def test_valid_numbers_still_load():
    cfg = load_config(TINY, {"pretrain.grad_clip": "0", "pretrain.warmup": "0", "pretrain.seq_len": "256",
                             "model.hidden_size": "128", "pretrain.beta1": "0", "distill.temperature": "0.5"})
    assert (cfg.pretrain.grad_clip, cfg.pretrain.seq_len, cfg.model.hidden_size) == (0.0, 256, 128)


def test_model_args_refuse_bad_sizes_where_they_are_built():
    """model_args (every model is built through it) checks the resolved preset too, not only the config load."""
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import model_args

    with pytest.raises(ConfigError, match=r"large.hidden_size=100 must be divisible by large.num_attention_heads=8"):
        model_args(ModelConfig(preset="cpu-large", hidden_size=100), 1024, "large")
    with pytest.raises(ConfigError, match=r"model.num_hidden_layers must be >= 1, got 0"):
        model_args(ModelConfig(preset="tiny", num_hidden_layers=0), 1024)


def test_cluster_k_0_is_an_error_before_any_work(tmp_path):
    """`recipes.cluster --k 0` used to say "too large, using k=1" and write a folder named k0."""
    from mlx_pn.clustering.stage import run_clustering

    cfg = load_config(TINY, {"out": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"--k 0: a cluster count must be >= 1"):
        run_clustering(cfg.cluster, 64, tmp_path / "clusters", data=None, ks=[16, 0])
    assert not (tmp_path / "clusters").exists()  # nothing embedded, no k0 folder


# --- 2. a memory estimate before the memory is taken ------------------------------------------------


@pytest.mark.parametrize("batch,seq_len", [(8, 64), (16, 256)])
def test_memory_estimate_against_the_measured_peak(batch, seq_len):
    """The estimate (weights, gradients, AdamW, activations, logits) is within [0.7, 1.5] of MLX's measured peak of
    one real training step, so "clearly cannot fit" means it."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_pn.config import ModelConfig, TrainConfig
    from mlx_pn.memory import param_count, training_bytes
    from mlx_pn.models.build import build_model, model_args
    from mlx_pn.train.step import make_step
    from mlx_pn.train.losses import cross_entropy
    from mlx_pn.train.optim import make_optimizer

    args = model_args(ModelConfig(preset="tiny"), 1024)
    model = build_model(args)
    n = sum(p.size for _, p in tree_flatten(model.parameters()))
    assert param_count(args) == n
    cfg = TrainConfig(batch_size=batch, seq_len=seq_len, compile=False)
    mx.reset_peak_memory()
    opt = make_optimizer(cfg)
    opt.init(model.trainable_parameters())
    step = make_step(model, opt, cross_entropy, 1, 1.0, False)
    x = mx.array(np.random.default_rng(0).integers(0, 1024, (1, batch, seq_len + 1)).astype(np.int32))
    loss, g = step(x)
    mx.eval(loss, g, model.state, opt.state)
    peak, est = mx.get_peak_memory(), sum(training_bytes(args, n, n, batch, seq_len).values())
    assert 0.7 * peak <= est <= 1.5 * peak, (est, peak)


def test_a_model_too_large_is_refused_before_it_is_built(monkeypatch):
    from mlx_pn import memory
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import build_model, model_args

    monkeypatch.setattr(memory, "available_bytes", lambda: (8 * 10**9, "MemAvailable in /proc/meminfo"))
    args = model_args(ModelConfig(preset="tiny", hidden_size=32768, num_hidden_layers=4), 1024)
    with pytest.raises(memory.OutOfMemoryError, match=r"a model of [\d,]+ parameters \(hidden_size 32768, 4 layers, "
                       r"vocabulary 1024\) needs about [\d.,]+ GB, more than 90% of the 8.00 GB available "
                       r"\(MemAvailable in /proc/meminfo\); choose a smaller preset"):
        build_model(args)


def test_a_training_step_too_large_is_refused_with_its_parts(pretrained, tmp_path, monkeypatch):
    """The model fits, its batch does not: refused before the optimizer state, naming every part."""
    from mlx_pn import memory
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.models.build import load_model
    from mlx_pn.train.loop import RunOptions, train

    cfg, data, _ = pretrained
    model = load_model(__import__("mlx_pn.methods.layout", fromlist=["pretrain_dir"]).pretrain_dir(cfg) / "final")
    t = type(cfg.pretrain)(**{**cfg.pretrain.__dict__, "batch_size": 64, "seq_len": 256, "steps": 2})
    monkeypatch.setattr(memory, "available_bytes", lambda: (500 * 10**6, "the cgroup memory limit"))
    batches = PackedBatches(data.corpora["generic"].tokens("train"), seq_len=256, batch_size=64, seed=0)
    with pytest.raises(memory.OutOfMemoryError, match=r"\[pt\] training \([\d,]+ parameters, batch_size 64 x seq_len "
                       r"256: weights .* activations [\d.]+ GB, logits [\d.]+ GB\) needs about [\d.]+ GB, more than 90% "
                       r"of the 0.50 GB available \(the cgroup memory limit\); lower batch_size"):
        train(model, t, batches, tmp_path / "run", RunOptions(desc="pt"), log=lambda *a: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_close_to_the_limit_warns(monkeypatch):
    from mlx_pn import memory
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import model_args

    args = model_args(ModelConfig(preset="tiny"), 1024)
    need = memory.BYTES * memory.param_count(args)
    monkeypatch.setattr(memory, "available_bytes", lambda: (int(need / 0.75), "test"))
    lines = []
    memory._verdict(need, "the tiny model", "fix it", log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: the tiny model needs about") and "close to" in lines[0]


def test_available_memory_is_known_here():
    from mlx_pn import memory

    avail, source = memory.available_bytes()
    assert avail is not None and avail > 10**8, source


# --- 4. environment failures: full disk, read-only folder -------------------------------------------

MLX_FULL = "[write] Unable to write 13065 bytes to file."


def test_mlx_write_error_during_a_model_save_names_the_folder_and_free_space(tmp_path, monkeypatch):
    import mlx.core as mx

    from mlx_pn.config import ModelConfig
    from mlx_pn.io import DiskSpaceError
    from mlx_pn.models.build import build_model, model_args, save_model

    model = build_model(model_args(ModelConfig(preset="tiny"), 1024))

    def full(*a, **k):
        raise RuntimeError(MLX_FULL)

    monkeypatch.setattr(mx, "save_safetensors", full)
    with pytest.raises(DiskSpaceError, match=rf"disk full while writing {tmp_path / 'run'}: [\d,.]+ MB free "
                       r"\(\[write\] Unable to write 13065 bytes to file.\); free some space"):
        save_model(tmp_path / "run" / "final", model)
    assert list((tmp_path / "run").iterdir()) == []  # no half-written folder, no temporary left


def test_enospc_and_read_only_are_one_line(tmp_path):
    import errno

    from mlx_pn.io import DiskSpaceError, WriteError, atomic_file, atomic_folder

    def enospc(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskSpaceError, match=rf"disk full while writing {tmp_path}: [\d,.]+ MB free"):
        atomic_file(tmp_path / "x.json", enospc)

    def erofs(tmp):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp / "model.safetensors"))

    with pytest.raises(WriteError, match=r"cannot write .*model.safetensors: Read-only file system \([\d,.]+ MB "
                                         r"free\); make .* writable or choose another --out"):
        atomic_folder(tmp_path / "final", erofs)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_read_only_out_through_a_recipe(pretrained, tmp_path, monkeypatch, capsys):
    """--out in a folder that cannot be written: one line, exit 2. Running as root, chmod 555 does not stop
    writes, so the refusal of the OS is simulated where the run folder is made."""
    import errno
    import os
    from pathlib import Path

    from recipes import pretrain

    cfg, _, _ = pretrained
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o555)
    else:
        real_mkdir = Path.mkdir

        def mkdir(self, *a, **k):
            if str(self).startswith(str(out)):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--config", str(TINY), "--out", str(out / "run"), "--data.dir", str(cfg.data_dir),
                       "--data.max_docs", "300", "--pretrain.steps", "2"])
    err = capsys.readouterr().err
    out.chmod(0o755)
    assert e.value.code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"error: cannot write {out / 'run'}" in err and "Permission denied" in err and "MB free" in err, err


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_through_a_recipe(pretrained, tmp_path, monkeypatch, capsys):
    import mlx.core as mx

    from recipes import pretrain

    cfg, _, _ = pretrained
    real = mx.save_safetensors

    def full(path, *a, **k):
        if "optimizer" in str(path):
            raise RuntimeError(MLX_FULL)
        return real(path, *a, **k)

    monkeypatch.setattr(mx, "save_safetensors", full)
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--config", str(TINY), "--out", str(tmp_path / "run"), "--data.dir", str(cfg.data_dir),
                       "--data.max_docs", "300", "--pretrain.steps", "2", "--pretrain.save_every", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err, err
    assert f"error: disk full while writing {tmp_path / 'run' / 'pretrain' / 'checkpoints'}: " in err, err
    assert not (tmp_path / "run" / "pretrain" / "checkpoints" / "step_0000001").exists()


# --- 4. environment failures: Ctrl-C and SIGTERM ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,how", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_interrupt_says_where_and_how_to_resume(pretrained, tmp_path, sig, code, how):
    """A tiny pretraining interrupted once it has a checkpoint: one line with the step and the checkpoint, exit
    130 / 143, no traceback, no temporary folder left; the same command then resumes from that checkpoint."""
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    cfg, _, _ = pretrained
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recipes.pretrain", "--config", str(TINY), "--out", str(out), "--data.dir",
           str(cfg.data_dir), "--data.max_docs", "300", "--pretrain.steps", "300", "--pretrain.save_every", "3",
           "--pretrain.eval_every", "1000"]
    # SIGINT as a terminal delivers it: a pytest started in the background (`cmd &`) ignores SIGINT, and its
    # children would inherit that
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpts = out / "pretrain" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpts.exists() and any(c.name.startswith("step_") for c in ckpts.iterdir())):
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    m = re.search(rf"interrupted \({how}\) at step (\d+) of \[pretrain\]; last checkpoint: (\S+step_(\d+)); rerun the "
                  r"same command to resume", err)
    assert m, err
    assert int(m.group(3)) <= int(m.group(1)) and (ckpts / f"step_{int(m.group(3)):07d}").exists(), err
    assert not [c for c in ckpts.iterdir() if c.name.startswith(".")], list(ckpts.iterdir())  # no temporary left
    if sig == "SIGTERM":  # the same command resumes there (stopped again once it says so: a test, not a run)
        r = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = []
        for line in r.stdout:
            lines.append(line)
            if "resuming from" in line:
                break
        r.terminate()
        r.communicate(timeout=60)
        assert any(f"resuming from {ckpts}/step_" in ln for ln in lines), lines
        assert int(lines[-1].split("step_")[1][:7]) >= int(m.group(3)), lines


@pytest.mark.slow
def test_sigterm_while_the_config_loads_is_the_one_line_exit(tmp_path):
    """Loading the config takes seconds (it imports mlx), before the recipe's own handler: a SIGTERM there
    (sent from inside load_config, so it lands there every time) is one line and exit 143, not a silent death."""
    import subprocess
    import sys

    from conftest import REPO

    script = (
        "import os, signal, time\n"
        "import mlx_pn.methods as m\n"
        "def load_config(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "m.load_config = load_config\n"
        "from recipes import pretrain\n"
        f"pretrain.main(['--config', 'tiny', '--out', {str(tmp_path / 'run')!r}])\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "interrupted (SIGTERM) outside training; finished stages and files are kept" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


# --- 3. an honest export ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok_and_model(tiny_run):
    """The tiny run's tokenizer and a tiny model (64 wide: input sizes 64 and 256) for it."""
    from mlx_pn.config import ModelConfig
    from mlx_pn.models.build import build_model, model_args

    tok = tiny_run[1].tokenizer
    return tok.hf_dir, build_model(model_args(ModelConfig(preset="tiny"), tok.vocab_size), seed=3)


@pytest.mark.parametrize("bits,group", [(4, 32), (4, 64), (8, 64), (3, 32)])
def test_quantized_export_measures_its_bits(tok_and_model, tmp_path, bits, group):
    """Bits per weight measured from the saved tensors: every layer quantized, (bits + 64 / group) per quantized
    weight (float32 scales and biases), the norms' few float32 weights on top."""
    from mlx_pn.export import export_mlx_lm

    tok, model = tok_and_model
    r = export_mlx_lm(model, tok, tmp_path / "q", quantize=bits, group_size=group)
    assert r["quantized_layers"] == 1 + 2 * 7  # embed_tokens + 7 linear layers per block
    assert bits + 64 / group <= r["bits_per_weight"] <= bits + 64 / group + 0.05, r


@pytest.mark.parametrize("group,match", [
    (7, r"--group-size 7: MLX quantizes in groups of 32, 64, 128"),
    (0, r"--group-size 0: MLX quantizes in groups of"),
    (-64, r"--group-size -64: MLX quantizes in groups of"),
    (128, r"--group-size 128 does not divide the input size 64 of model.embed_tokens \(and 12 more layers\): those "
          r"layers would stay unquantized; use --group-size 64"),
])
def test_bad_group_sizes_are_refused(tok_and_model, tmp_path, group, match):
    from mlx_pn.export import ExportError, export_mlx_lm

    tok, model = tok_and_model
    with pytest.raises(ExportError, match=match):
        export_mlx_lm(model, tok, tmp_path / "q", quantize=4, group_size=group)
    assert list(tmp_path.iterdir()) == []


def test_nan_weight_is_not_exported(tok_and_model, tmp_path):
    import mlx.core as mx

    from mlx_pn.export import ExportError, export_mlx_lm
    from mlx_pn.models.build import build_model

    tok, model = tok_and_model
    bad = build_model(model.args, seed=3)
    w = bad.model.layers[1].mlp.down_proj.weight
    bad.model.layers[1].mlp.down_proj.weight = mx.where(mx.arange(w.size).reshape(w.shape) == 5, mx.nan, w)
    with pytest.raises(ExportError, match=r"1 weight tensor\(s\) hold NaN or inf \(model.layers.1.mlp.down_proj.weight\)"
                                          r"; nothing was exported"):
        export_mlx_lm(bad, tok, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_nan_logits_fail_the_verification(tok_and_model, tmp_path, monkeypatch):
    """`nan > tol` is False: the check is `not diff <= tol`, and any non-finite logit fails, quantized or not."""
    import mlx.core as mx

    from mlx_pn.export import ExportError, export_mlx_lm

    tok, model = tok_and_model

    class NanModel(type(model)):
        def __call__(self, x, *a, **k):
            return super().__call__(x, *a, **k) * mx.nan

    m = NanModel(model.args)
    m.update(model.parameters())
    for quantize in (None, 4):
        with pytest.raises(ExportError, match=rf"{tmp_path / 'e'}: logits are not finite \(max \|diff\| nan\)"):
            export_mlx_lm(m, tok, tmp_path / "e", quantize=quantize, group_size=32)
        assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_verification_leaves_no_folder(tok_and_model, tmp_path, monkeypatch):
    from mlx_pn import export

    tok, model = tok_and_model

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_mlx_lm(model, tok, tmp_path / "e")
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary folder


def test_force_replaces_only_an_export(tok_and_model, tmp_path):
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.io import ForeignFolderError

    tok, model = tok_and_model
    export_mlx_lm(model, tok, tmp_path / "e", verify=False)
    export_mlx_lm(model, tok, tmp_path / "e", force=True, verify=False)  # a previous export: replaced
    run = tmp_path / "run"
    for f in ("data/shards/x.bin", "pretrain/checkpoints/step_0000001/model.safetensors", "pretrain/final/config.json"):
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text("keep")
    before = sorted(str(p) for p in run.rglob("*"))
    for dest in (run, run / "pretrain"):
        with pytest.raises(ForeignFolderError, match=rf"{dest} exists and is not a export folder made by mlx_pn"):
            export_mlx_lm(model, tok, dest, force=True, verify=False)
    assert sorted(str(p) for p in run.rglob("*")) == before  # nothing deleted


@pytest.mark.slow
def test_force_onto_a_run_through_the_recipe(pretrained, tmp_path, capsys):
    from mlx_pn.methods.layout import pretrain_dir
    from recipes import export

    cfg, _, _ = pretrained
    before = sorted(str(p) for p in pretrain_dir(cfg).rglob("*"))
    with pytest.raises(SystemExit) as e:
        export.main(["--config", str(TINY), "--out", cfg.out, "--model", str(pretrain_dir(cfg) / "final"),
                     "--to", str(pretrain_dir(cfg)), "--force"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and "is not a export folder made by mlx_pn" in err, err
    assert sorted(str(p) for p in pretrain_dir(cfg).rglob("*")) == before


def test_export_refused_when_the_disk_is_too_small(tok_and_model, tmp_path, monkeypatch):
    import shutil

    from mlx_pn.export import export_mlx_lm
    from mlx_pn.io import DiskSpaceError

    tok, model = tok_and_model
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1_000_000))
    with pytest.raises(DiskSpaceError, match=rf"not enough disk space for the export e in {tmp_path}: needs about "
                                             r"[\d.]+ MB, 1.0 MB free; free some space or export elsewhere"):
        export_mlx_lm(model, tok, tmp_path / "e")


# --- 3. final/ and best/ hashed like checkpoints ----------------------------------------------------


@pytest.mark.parametrize("damage", ["weights", "config", "no hashes"])
def test_a_changed_model_folder_is_named_by_load_model(tok_and_model, tmp_path, damage):
    import json

    from mlx_pn.io import write_marker
    from mlx_pn.models.build import CheckpointError, load_model, save_model

    _, model = tok_and_model
    folder = save_model(tmp_path / "final", model)
    assert set(json.loads((folder / "sha256.json").read_text())) == {"model.safetensors", "config.json"}
    load_model(folder)  # intact: loads
    if damage == "weights":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-5] ^= 0xFF
        (folder / "model.safetensors").write_bytes(bytes(data))
        match = rf"{folder}/model.safetensors is missing or was changed after it was written"
    elif damage == "config":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "rope_theta": 5.0}))
        match = rf"{folder}/config.json is missing or was changed"
    else:
        (folder / "sha256.json").unlink()
        write_marker(folder, "model")
        match = rf"{folder}/sha256.json is missing, so its weights cannot be checked"
    with pytest.raises(CheckpointError, match=match):
        load_model(folder)


def test_checkpoint_refused_when_the_disk_is_too_small(tok_and_model, tmp_path, monkeypatch):
    import shutil

    from mlx_pn.config import TrainConfig
    from mlx_pn.io import DiskSpaceError
    from mlx_pn.train.checkpoint import save_checkpoint
    from mlx_pn.train.optim import make_optimizer

    _, model = tok_and_model
    opt = make_optimizer(TrainConfig())
    opt.init(model.trainable_parameters())
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    with pytest.raises(DiskSpaceError, match=rf"not enough disk space for checkpoint step_0000005 in {tmp_path / 'ck'}: "
                                             r"needs about [\d.]+ MB, 0.1 MB free; free some space or lower "
                                             r"train.keep_checkpoints"):
        save_checkpoint(tmp_path / "ck", 5, model, opt, {})
    assert [p.name for p in (tmp_path / "ck").iterdir()] == []


# --- 4. one over-long document ----------------------------------------------------------------------


def test_a_50_mb_line_says_split_it_with_the_file(tmp_path):
    from mlx_pn.data.sources import DataError, load_documents

    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * (10 * 10**6))  # 50 MB, no newline
    with pytest.raises(DataError, match=rf"data.generic: {big}: document 'big.txt' is 50.0 MB in one piece, more than "
                                        r"the 16.8 MB the tokenizer trains on; split it into smaller documents"):
        load_documents(str(big), "data.generic")


def test_tokenizer_with_only_too_long_documents_is_a_data_error(tmp_path):
    from mlx_pn.data.sources import DataError
    from mlx_pn.data.tokenizer import train_tokenizer

    with pytest.raises(DataError, match=r"tokenizer: no document of the generic text is shorter than 16.8 MB"):
        train_tokenizer(["word " * (4 * 10**6)], 300, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()


def test_the_loop_refuses_a_window_past_the_models_positions(tok_and_model, tmp_path):
    """The large model's seq_len is not checked at load (only the methods that build it use it): the loop checks
    every model before its first step."""
    import numpy as np

    from mlx_pn.config import TrainConfig
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.loop import RunOptions, train
    from mlx_pn.train.state import TrainingError

    _, model = tok_and_model
    batches = PackedBatches(np.zeros(8 * 300, np.uint16), seq_len=257, batch_size=2, seed=0)
    with pytest.raises(TrainingError, match=r"\[llm\] seq_len=257 is longer than the model's "
                                            r"max_position_embeddings=256"):
        train(model, TrainConfig(steps=1, batch_size=2, seq_len=257), batches, tmp_path / "r", RunOptions(desc="llm"),
              log=lambda *a: None)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_interrupt_outside_training_says_so():
    from mlx_pn import interrupt

    interrupt.done()
    assert interrupt.message(KeyboardInterrupt()).startswith("interrupted (Ctrl-C) outside training; finished")
    assert interrupt.exit_code(interrupt.Terminated()) == 143 and interrupt.exit_code(KeyboardInterrupt()) == 130
    interrupt.note("specialize legal", 7, None)
    assert "at step 7 of [specialize legal]; last checkpoint: none yet" in interrupt.message(interrupt.Terminated())
    interrupt.done()
