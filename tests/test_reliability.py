"""Crash safety, damaged files, non-finite loss.

- kill -9 at seeded random moments in prepare, pretrain and specialize (tools/killtest.py, 10 kills per
  stage on tiny settings): every stage resumes, nothing half-written is ever visible, no temporary file
  is left, and the outputs equal an uninterrupted run's, bit for bit;
- durable writes: stale temporary files are swept, a replaced folder is never absent, the crash hook;
- checkpoints and shards: a truncated or corrupted one is found with a message naming it, and the
  previous good checkpoint is used / the shard is rebuilt from its source;
- a non-finite loss stops training naming the step, the batch and the last good checkpoint.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import REPO, TINY

from mlx_pn.io import atomic_file, atomic_folder, stale_temps, write_json_atomic
from mlx_pn.train.checkpoint import CheckpointError, latest_good_checkpoint, list_checkpoints, verify_checkpoint

pytestmark = pytest.mark.slow  # kill -9 harness and crash-at-every-write runs: not in the fast loop (pytest -m "not slow")

# --- kill -9 ----------------------------------------------------------------------------------------

QUICK = "--config recipes/configs/tiny.yaml --out {out} --data.max_docs 100 --data.test_windows 8"
QUICK_TRAIN = ("--pretrain.steps 16 --pretrain.save_every 2 --pretrain.eval_every 8 --pretrain.log_every 4 "
               "--pretrain.eval_batches 2 --finetune.steps 12 --finetune.save_every 2 --finetune.eval_every 4 "
               "--finetune.log_every 2 --finetune.eval_batches 2 --finetune.patience 2")
QUICK_STAGES = {
    "prepare": f"python -m recipes.prepare --corpus config {QUICK}",
    "pretrain": f"python -m recipes.pretrain {QUICK} {QUICK_TRAIN}",
    "specialize": f"python -m recipes.specialize {QUICK} {QUICK_TRAIN} --domain legal",
}


def test_kill_9_every_stage_resumes_to_identical_outputs(tmp_path):
    from tools.killtest import format_report, run

    reports = run(QUICK_STAGES, tmp_path, kills=10, seed=0, log=lambda *a: None)
    text = format_report(reports, 0, "time")
    print(text)
    assert [r.name for r in reports] == list(QUICK_STAGES)
    for r in reports:
        assert r.kills >= 10, text
        assert r.rerun_unchanged, text
        assert not r.problems, text
    assert sum(r.resumed_from_checkpoint for r in reports) >= 3, text  # training stages really resumed


def test_crash_at_every_early_write_boundary(tmp_path):
    """MLX_PN_CRASH_AT_WRITE: the process kills itself just before / after its c-th durable write."""
    from tools.killtest import format_report, run

    stages = {"prepare": QUICK_STAGES["prepare"],
              "pretrain": QUICK_STAGES["pretrain"].replace("--pretrain.steps 16", "--pretrain.steps 6")}
    reports = run(stages, tmp_path, kills=6, mode="writes", log=lambda *a: None)
    text = format_report(reports, 0, "writes")
    for r in reports:
        assert r.kills >= 6 and r.crash_points[:2] == ["1", "1+"], text
        assert not r.problems, text


# --- durable writes ---------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_are_swept(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    (tmp_path / f".a.json.tmp-{dead}-x1").write_text("half")
    (tmp_path / f".ckpt.tmp-{dead}-x2").mkdir()
    (tmp_path / f".b.json.tmp-{live}-x3").write_text("being written")
    (tmp_path / ".hidden").write_text("not ours")
    assert [p.name for p in stale_temps(tmp_path)] == [f".a.json.tmp-{dead}-x1", f".ckpt.tmp-{dead}-x2"]
    write_json_atomic(tmp_path / "c.json", {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".b.json.tmp-{live}-x3", ".hidden", "c.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_a_folder_never_leaves_it_absent(tmp_path, monkeypatch, exchange):
    import mlx_pn.io

    if not exchange:
        monkeypatch.setattr(mlx_pn.io, "_exchange", lambda a, b: False)
    atomic_folder(tmp_path / "m", lambda t: (t / "w").write_text("old"))

    def write(t):
        assert (tmp_path / "m" / "w").read_text() == "old"  # the old one stays in place while writing
        (t / "w").write_text("new")

    atomic_folder(tmp_path / "m", write)
    assert (tmp_path / "m" / "w").read_text() == "new" and os.listdir(tmp_path) == ["m"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    atomic_file(tmp_path / "f", lambda f: f.write(b"old"))
    with pytest.raises(ZeroDivisionError):
        atomic_file(tmp_path / "f", lambda f: (f.write(b"partial"), 1 / 0))
    assert (tmp_path / "f").read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


@pytest.mark.parametrize("point", ["1", "1+"])
def test_crash_hook_kills_before_or_after_the_rename(tmp_path, point):
    code = ("import mlx_pn.io as io, sys; io.write_json_atomic(sys.argv[1], {'v': 2})")
    (tmp_path / "f.json").write_text('{"v": 1}')
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.json")], cwd=REPO,
                       env={**os.environ, "MLX_PN_CRASH_AT_WRITE": point})
    assert p.returncode == -9
    assert json.loads((tmp_path / "f.json").read_text()) == {"v": 1 if point == "1" else 2}
    left = [n for n in os.listdir(tmp_path) if n != "f.json"]
    assert len(left) == (1 if point == "1" else 0)  # the temp file of a crash before the rename ...
    write_json_atomic(tmp_path / "g.json", {})  # ... is swept by the next write in that folder
    assert sorted(os.listdir(tmp_path)) == ["f.json", "g.json"]


# --- checkpoints ------------------------------------------------------------------------------------


@pytest.fixture
def three_checkpoints(tiny_run, tmp_path):
    from test_train import small_model, tcfg
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.loop import RunOptions, train

    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    train(small_model(data.tokenizer.vocab_size), tcfg(steps=6, save_every=2, keep_checkpoints=3),
          PackedBatches(toks, 32, 4, 0), tmp_path / "run", log=lambda *a: None)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step_0000002", "step_0000004", "step_0000006"]
    return root


DAMAGE = {
    "truncated model": lambda ck: os.truncate(ck / "model.safetensors", 1000),
    "truncated optimizer": lambda ck: os.truncate(ck / "optimizer.safetensors", 10),
    "flipped byte": lambda ck: _flip(ck / "model.safetensors", 5000),
    "missing file": lambda ck: (ck / "optimizer.safetensors").unlink(),
    "state.json cut": lambda ck: (ck / "state.json").write_text('{"step": 6, "trai'),
    "state.json missing": lambda ck: (ck / "state.json").unlink(),
}


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_checkpoint_is_named_and_the_previous_one_used(three_checkpoints, damage):
    newest = list_checkpoints(three_checkpoints)[-1]
    DAMAGE[damage](newest)
    with pytest.raises(CheckpointError, match=r"step_0000006/(model.safetensors|optimizer.safetensors|state.json)"):
        verify_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match=r"skipping damaged checkpoint: .*step_0000006"):
        path, state = latest_good_checkpoint(three_checkpoints)
    assert path.name == "step_0000004" and state["step"] == 4


def test_all_checkpoints_damaged_means_start_over(three_checkpoints):
    for ck in list_checkpoints(three_checkpoints):
        os.truncate(ck / "model.safetensors", 100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert latest_good_checkpoint(three_checkpoints) is None
    assert len(w) == 3 and all("sha256 mismatch" in str(x.message) for x in w)


def test_resume_with_a_damaged_newest_checkpoint_still_matches(tiny_run, tmp_path):
    """Damage the newest checkpoint of an interrupted run: resuming from the previous one gives the
    uninterrupted run's weights, bit for bit."""
    from test_train import _Interrupt, _Stop, small_model, tcfg, weights
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.loop import RunOptions, train

    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    full = small_model(data.tokenizer.vocab_size)
    train(full, tcfg(steps=8, save_every=2), PackedBatches(toks, 32, 4, 1), tmp_path / "full", log=lambda *a: None)
    with pytest.raises(_Stop):
        train(small_model(data.tokenizer.vocab_size), tcfg(steps=8, save_every=2, keep_checkpoints=3),
              _Interrupt(PackedBatches(toks, 32, 4, 1), at=8), tmp_path / "part", log=lambda *a: None)
    newest = list_checkpoints(tmp_path / "part" / "checkpoints")[-1]
    assert newest.name == "step_0000006"
    _flip(newest / "optimizer.safetensors", 3000)
    resumed, logs = small_model(data.tokenizer.vocab_size, seed=5), []
    with pytest.warns(RuntimeWarning, match="step_0000006/optimizer.safetensors is missing or corrupted"):
        train(resumed, tcfg(steps=8, save_every=2), PackedBatches(toks, 32, 4, 1), tmp_path / "part", log=logs.append)
    assert any("resuming from" in m and "step_0000004" in m for m in logs), logs
    wf, wr = weights(full), weights(resumed)
    assert all(np.array_equal(wf[k], wr[k]) for k in wf)


# --- shards ---------------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tiny_run, tmp_path):
    from conftest import tiny_config

    cfg, data = tiny_run
    shutil.copytree(cfg.data_dir, tmp_path / "data")
    return tiny_config(tmp_path), tmp_path / "data" / "shards" / "legal"


SHARD_DAMAGE = {
    "flipped byte (same size)": lambda f: _flip(f / "train.bin", 777),
    "truncated": lambda f: os.truncate(f / "valid.bin", 10),
    "missing": lambda f: (f / "test.bin").unlink(),
    "manifest cut": lambda f: (f / "manifest.json").write_text('{"name": "le'),
}
# the message that names the damaged file (none for a damaged manifest: nothing to check against, it is rebuilt)
SHARD_MESSAGE = {
    "flipped byte (same size)": "train.bin: corrupted",
    "truncated": "valid.bin: missing or truncated",
    "missing": "test.bin: missing or truncated",
    "manifest cut": None,
}


@pytest.mark.parametrize("damage", list(SHARD_DAMAGE), ids=list(SHARD_DAMAGE))
def test_damaged_shard_is_named_and_rebuilt(data_copy, damage):
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.io import file_sha256

    cfg, folder = data_copy
    before = {f.name: file_sha256(f) for f in folder.glob("*.bin")}
    SHARD_DAMAGE[damage](folder)
    logs = []
    data = prepare_data(cfg, log=logs.append)
    named = [m for m in logs if f"{folder}/" in m and "legal: rebuilding" not in m]
    if SHARD_MESSAGE[damage] is None:
        assert not named, logs
    else:
        assert any(f"{folder}/{SHARD_MESSAGE[damage]}" in m for m in named), logs
        assert "[data] legal: rebuilding the damaged shards from data.domains.legal" in logs, logs
    assert any(m.startswith("[data] legal: train ") for m in logs), logs  # the rebuild's sizes line
    assert {f.name: file_sha256(f) for f in folder.glob("*.bin")} == before
    data.corpora["legal"].verify(force=True)


def test_shard_check_is_skipped_for_unchanged_files(data_copy, monkeypatch):
    """The sha256 of a shard is recomputed only when its size or mtime changed since the last good check."""
    import mlx_pn.data.shards as shards
    from mlx_pn.data.shards import Corpus

    cfg, folder = data_copy
    calls = []
    real = shards.file_sha256
    monkeypatch.setattr(shards, "file_sha256", lambda p: calls.append(p) or real(p))
    Corpus(folder, verify_hashes=True)
    assert calls == []  # stamps written when the shards were built, and copytree keeps mtimes
    os.utime(folder / "train.bin")
    Corpus(folder, verify_hashes=True)
    assert [p.name for p in calls] == ["train.bin"]
    _flip(folder / "valid.bin", 3)
    with pytest.raises(shards.DataError, match=r"legal/valid.bin: corrupted \(its sha256 differs"):
        Corpus(folder, verify_hashes=True)


# --- non-finite loss --------------------------------------------------------------------------------


def test_non_finite_loss_from_a_huge_learning_rate(tiny_run, tmp_path):
    """lr=1e30 through the pretrain stage: the error names the step, the batch index and the last good
    checkpoint, and no final model is written."""
    from mlx_pn.methods import pretrain
    from mlx_pn.train.state import TrainingError
    from conftest import tiny_config

    cfg, data = tiny_run
    cfg2 = tiny_config(tmp_path, **{"data.dir": str(cfg.data_dir), "pretrain.lr": "1e30", "pretrain.min_lr": "1e30",
                                    "pretrain.warmup": "0", "pretrain.save_every": "1", "pretrain.grad_clip": "0"})
    with pytest.raises(TrainingError, match=r"non-finite loss (nan|inf) at step (\d+) \(batch index \d+\); last good "
                                            r"checkpoint: .*step_\d+\. Lower the learning rate") as e:
        pretrain(cfg2, data, log=lambda *a: None)
    step = int(str(e.value).split(" at step ")[1].split(" ")[0])
    assert step >= 2 and f"step_{step - 1:07d}" in str(e.value)
    assert not (tmp_path / "pretrain" / "final").exists()


def test_non_finite_loss_through_the_recipe(pretrained, tmp_path, capsys):
    """A poisoned parameter (NaN in the final norm of the pretrained model): specialize exits with one line."""
    import mlx.core as mx

    from recipes import specialize
    from mlx_pn.models.build import load_model, save_model

    cfg, data, _ = pretrained
    out = tmp_path / "run"
    shutil.copytree(cfg.data_dir, out / "data")
    model = load_model(f"{cfg.out}/pretrain/final")
    model.model.norm.weight = mx.full(model.model.norm.weight.shape, mx.nan)
    save_model(out / "pretrain" / "final", model)
    shutil.copy(f"{cfg.out}/pretrain/summary.json", out / "pretrain" / "summary.json")
    with pytest.raises(SystemExit) as e:
        specialize.main(["--config", str(TINY), "--out", str(out), "--data.max_docs", "300", "--pretrain.steps", "40",
                         "--finetune.steps", "20", "--domain", "legal", "--data.test_windows", "4"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "non-finite loss nan at step 1 (batch index 0); last good checkpoint: none" in err, err


# --- resuming at the very end (gaps the kill test found in loop.py, fixed there) ------------------------


def test_resume_from_the_last_checkpoint_keeps_final_loss(tiny_run, tmp_path):
    from test_train import small_model, tcfg
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.loop import RunOptions, train

    cfg, data = tiny_run
    toks = data.corpora["generic"].tokens("train")
    r1 = train(small_model(data.tokenizer.vocab_size), tcfg(steps=4, save_every=2), PackedBatches(toks, 32, 4, 0),
               tmp_path, log=lambda *a: None)
    final = (tmp_path / "final" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "final")  # killed after the last checkpoint, before the final weights
    r2 = train(small_model(data.tokenizer.vocab_size), tcfg(steps=4, save_every=2), PackedBatches(toks, 32, 4, 0),
               tmp_path, log=lambda *a: None)
    assert r2.final_loss == r1.final_loss and (r2.steps, r2.tokens) == (r1.steps, r1.tokens) == (4, 4 * 4 * 32)
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == final


def test_resume_after_early_stop_stays_stopped(tiny_run, tmp_path):
    from test_train import small_model, tcfg
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.loop import RunOptions, train

    cfg, data = tiny_run
    toks, valid = data.corpora["legal"].tokens("train"), data.corpora["legal"].tokens("valid")
    c = tcfg(steps=40, lr=0.3, min_lr=0.3, warmup=0, eval_every=2, patience=2, grad_clip=0, save_every=100)
    r1 = train(small_model(data.tokenizer.vocab_size), c, PackedBatches(toks, 32, 4, 0), tmp_path,
               RunOptions(valid_tokens=valid), log=lambda *a: None)
    assert r1.stopped_early and r1.steps < 40
    final = (tmp_path / "final" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "final")  # killed after the early-stop checkpoint, before the final weights
    r2 = train(small_model(data.tokenizer.vocab_size), c, PackedBatches(toks, 32, 4, 0), tmp_path,
               RunOptions(valid_tokens=valid), log=lambda *a: None)
    assert (r2.steps, r2.stopped_early, r2.best_step) == (r1.steps, True, r1.best_step)
    untimed = lambda r: r.summary() | {"wall_s": 0, "data_wait_s": 0}  # noqa: E731
    assert untimed(r2) == untimed(r1)
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == final  # the best weights again


@pytest.mark.parametrize("point,side,folder", [("2", False, False), ("2+", False, False), ("3", False, False),
                                               ("3+", True, False), ("1", True, False), ("1+", True, True)])
def test_the_crash_hook_reaches_a_folders_rename_after_its_nested_writes(tmp_path, point, side, folder):
    """A folder (write 1) whose writing makes two durable writes of its own (2: a file inside it, 3: a file beside
    it). Every boundary is reachable, the folder's rename (1, 1+) included: the hook compared the running count,
    already 3 by then, so N=1 never fired (issue 23)."""
    script = (
        "import sys; from pathlib import Path; from mlx_pn.io import atomic_folder, write_text_atomic\n"
        "d = Path(sys.argv[1])\n"
        "def write(tmp):\n"
        "    write_text_atomic(tmp / 'a.txt', 'a')\n"
        "    write_text_atomic(d.parent / 'side.txt', 'side')\n"
        "atomic_folder(d, write)\n")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "MLX_PN_CRASH_AT_WRITE": point}, timeout=120)
    assert r.returncode == -9, r.stderr
    assert ((tmp_path / "side.txt").exists(), (tmp_path / "out").exists()) == (side, folder)
