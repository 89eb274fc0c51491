"""Run safety (issue 15, part A): names that become paths, folders replaced only when ours, one writer per
stage folder, config fingerprints checked on resume and before "already done", tampered checkpoints refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_config


def _quiet(*a, **k):
    pass


# --- names that become paths ------------------------------------------------------------------------------

BAD_NAMES = ["../../../victim", "/abs/victim", ".", "", "..", ".hidden", "a/b", "a\\b", " padded", "~user"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_domain_name_that_is_not_one_plain_folder_name_is_refused(tmp_path, name):
    from mlx_pn.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.domains: .* is not a usable name"):
        tiny_config(tmp_path, **{"data.domains": json.dumps({name: "bundled:legal"})})
    with pytest.raises(ConfigError, match=r"^domain: .* is not a usable name"):
        tiny_config(tmp_path, domain=name)


def test_a_grid_variant_name_or_a_variant_moving_out_is_refused(tmp_path):
    from mlx_pn.compare.grid import CompareConfig, grid_rows
    from mlx_pn.config import ConfigError
    from mlx_pn.methods import load_config

    with pytest.raises(ConfigError, match=r"grid\.variants: '\.\./x' is not a usable name"):
        load_config(None, {"out": str(tmp_path), "grid.variants": "../x=model.share_ffn=true"}, CompareConfig)
    cfg = load_config(None, {"out": str(tmp_path), "grid.variants": f"v=out={tmp_path.parent}", "grid.methods": "slm"},
                      CompareConfig)
    with pytest.raises(ConfigError, match=r"grid\.variants\.v: 'out' cannot vary per row"):
        grid_rows(cfg)


@pytest.mark.slow
def test_prepare_with_a_domain_name_climbing_out_touches_nothing(tmp_path):
    """The issue's first case: exit 2 before anything is written; the folder beside --out keeps its file."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "mine.txt").write_text("a user's file")
    run = tmp_path / "a" / "b" / "RUN"
    r = subprocess.run([sys.executable, "-m", "recipes.prepare", "--config", "recipes/configs/tiny.yaml", "--corpus",
                        "config", "--out", str(run), "--data.domains", "../../../victim=bundled:legal"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "is not a usable name" in r.stderr and "Traceback" not in r.stderr
    assert (victim / "mine.txt").read_text() == "a user's file" and sorted(os.listdir(victim)) == ["mine.txt"]
    assert not (tmp_path / "a").exists()


def test_shards_never_replace_a_folder_that_is_not_a_shard_set(tiny_run, tmp_path):
    """Below the name check: build_shards itself refuses a foreign destination and '.' (data/shards itself)."""
    from mlx_pn.data.shards import build_shards
    from mlx_pn.data.sources import DataError, Document

    cfg, data = tiny_run
    splits = {"train": [Document("a", "some text " * 20)], "valid": [], "test": []}
    root = tmp_path / "shards"
    (root / "user").mkdir(parents=True)
    (root / "user" / "notes.txt").write_text("keep me")
    (root / "other").mkdir()  # another domain's shards: must survive a '.' name
    with pytest.raises(DataError, match="not a shards folder made by mlx_pn"):
        build_shards("user", splits, data.tokenizer, root, "spec")
    with pytest.raises(DataError, match="would replace .* itself"):
        build_shards(".", splits, data.tokenizer, root, "spec")
    with pytest.raises(DataError, match="outside"):
        build_shards("../escaped", splits, data.tokenizer, root, "spec")
    assert (root / "user" / "notes.txt").read_text() == "keep me" and (root / "other").is_dir()
    assert not (tmp_path / "escaped").exists()
    # a shard set of ours is replaced (marker), and so is one made before markers (its manifest)
    build_shards("mine", splits, data.tokenizer, root, "spec")
    build_shards("mine", splits, data.tokenizer, root, "spec")
    (root / "mine" / ".mlx-pn.json").unlink()
    build_shards("mine", splits, data.tokenizer, root, "spec")
    assert json.loads((root / "mine" / "manifest.json").read_text())["name"] == "mine"


def test_atomic_folder_and_remove_tree_with_a_kind_touch_only_their_kind(tmp_path):
    from mlx_pn.io import ForeignFolderError, atomic_folder, has_marker, remove_tree

    atomic_folder(tmp_path / "ours", lambda t: (t / "f").write_text("1"), kind="export")
    assert has_marker(tmp_path / "ours", "export") and not has_marker(tmp_path / "ours", "run")
    with pytest.raises(ForeignFolderError):
        atomic_folder(tmp_path / "ours", lambda t: None, kind="shards")  # ours, but of another kind
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "x").write_text("data")
    with pytest.raises(ForeignFolderError, match="refusing to replace or delete"):
        atomic_folder(tmp_path / "theirs", lambda t: None, kind="export")
    with pytest.raises(ForeignFolderError):
        remove_tree(tmp_path / "theirs", kind="export")
    assert (tmp_path / "theirs" / "x").read_text() == "data"
    remove_tree(tmp_path / "ours", kind="export")
    assert not (tmp_path / "ours").exists()


# --- one writer per stage folder ----------------------------------------------------------------------------

HOLDER = """
import sys, time
from mlx_pn import runlock
runlock.acquire(sys.argv[1], log=lambda *a: None)
print("locked", flush=True)
time.sleep(60)
"""


def _hold_in_subprocess(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


READER = ("import sys, time; from mlx_pn import runlock\n"
          "with runlock.reading(sys.argv[1]):\n    print('reading', flush=True); time.sleep(60)")


@pytest.mark.slow
def test_readers_of_a_stage_folder_share_it_and_keep_writers_out(tmp_path):
    """Specializations load their parent under runlock.reading: several at once (parallel domains, the grid's jobs),
    but no pretraining starts on the folder meanwhile, and none reads while a pretraining writes."""
    from mlx_pn import runlock

    folder = tmp_path / "pretrain"
    with runlock.hold(folder):  # a stage folder: it has a lock file
        pass
    reader = subprocess.Popen([sys.executable, "-c", READER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        with runlock.reading(folder):  # a second reader at once
            pass
        with pytest.raises(runlock.RunLockError, match=f"another process is reading {folder}"):
            runlock.acquire(folder)
    finally:
        reader.kill()
        reader.wait()
    writer = _hold_in_subprocess(folder)
    try:
        with pytest.raises(runlock.RunLockError, match=f"pid {writer.pid} is writing {folder}"):
            with runlock.reading(folder):
                pass
    finally:
        writer.kill()
        writer.wait()
    with runlock.hold(folder):  # this process writes it: it reads its own folder
        with runlock.reading(folder):
            pass


@pytest.mark.slow
def test_a_second_process_on_a_locked_stage_folder_stops_with_one_line(tmp_path):
    from mlx_pn import runlock

    folder = tmp_path / "pretrain"
    p = _hold_in_subprocess(folder)
    try:
        with pytest.raises(runlock.RunLockError) as e:
            runlock.acquire(folder)
        msg = str(e.value)
        assert msg.startswith(f"pid {p.pid} is writing {folder} since ") and "(command: python" in msg
        assert "\n" not in msg
    finally:
        p.kill()
        p.wait()
    lines = []
    with runlock.hold(folder, log=lines.append):  # the holder is gone: its lock is taken over, said in a line
        with runlock.hold(folder, log=lines.append):  # re-entrant in one process
            pass
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert len(lines) == 1 and f"from pid {p.pid} (no longer running" in lines[0]
    assert (folder / ".lock").read_text() == ""  # released cleanly: nobody to report next time


@pytest.mark.slow
def test_train_refuses_a_folder_another_process_is_writing(tiny_run, tmp_path):
    from mlx_pn.runlock import RunLockError

    cfg, data = tiny_run
    p = _hold_in_subprocess(tmp_path / "run")
    try:
        with pytest.raises(RunLockError, match=f"pid {p.pid} is writing"):
            _train(cfg, data, tmp_path / "run", steps=4)
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        p.kill()
        p.wait()


# --- fingerprints -------------------------------------------------------------------------------------------


def _train(cfg, data, out, steps=8, resume=True, **t_over):
    import dataclasses

    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.methods.slm import new_model
    from mlx_pn.train.loop import RunOptions, train

    t = dataclasses.replace(cfg.pretrain, steps=steps, save_every=4, eval_every=4, eval_batches=1, log_every=2,
                            **t_over)
    g = data.corpora["generic"]
    model = new_model(cfg, data, seed=t.seed)
    batches = PackedBatches(g.tokens("train"), t.seq_len, t.batch_size, t.seed)
    return train(model, t, batches, out, RunOptions(valid_tokens=g.tokens("valid")[:2000], resume=resume), log=_quiet)


@pytest.mark.slow
def test_a_resume_with_another_config_stops_and_lists_the_keys(tiny_run, tmp_path):
    from mlx_pn.fingerprint import StaleRunError

    cfg, data = tiny_run
    out = tmp_path / "run"
    r = _train(cfg, data, out, steps=8)
    state = json.loads((out / "checkpoints" / "step_0000008" / "state.json").read_text())
    assert state["fingerprint"] == r.fingerprint and state["fingerprint"]["train.lr"] == cfg.pretrain.lr
    with pytest.raises(StaleRunError, match=r"train\.lr: 0\.003 -> 0\.001.*train\.seq_len: 64 -> 32.*--no-resume"):
        _train(cfg, data, out, steps=8, lr=1e-3, seq_len=32)
    with pytest.raises(StaleRunError, match=r"train\.batch_size: 8 -> 4"):
        _train(cfg, data, out, steps=8, batch_size=4)
    with pytest.raises(StaleRunError, match=r"train\.seed"):
        _train(cfg, data, out, steps=8, seed=1)
    assert _train(cfg, data, out, steps=8).steps == 8  # the same command still resumes (finished: no step)


@pytest.mark.slow
def test_fewer_steps_than_the_checkpoint_is_an_error_that_says_so(tiny_run, tmp_path):
    from mlx_pn.train.state import TrainingError

    cfg, data = tiny_run
    _train(cfg, data, tmp_path / "run", steps=8)
    with pytest.raises(TrainingError, match=r"step_0000008 is at step 8, past the 4 steps this config plans"):
        _train(cfg, data, tmp_path / "run", steps=4)


@pytest.mark.slow
def test_no_resume_moves_the_old_run_aside(tiny_run, tmp_path):
    cfg, data = tiny_run
    out = tmp_path / "pretrain"
    _train(cfg, data, out, steps=8)
    r = _train(cfg, data, out, steps=4, resume=False)
    assert r.steps == 4
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("pretrain.old-")]
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "step_0000008" / "state.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004"]  # nothing of 8 left to resume


def test_fingerprint_is_stable_across_builds_and_has_no_paths(tiny_run, tmp_path):
    import dataclasses

    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.methods.slm import new_model
    from mlx_pn.train.loop import run_fingerprint

    cfg, data = tiny_run
    g = data.corpora["generic"]
    t = cfg.pretrain
    fps = [run_fingerprint(new_model(cfg, data, seed=t.seed), t, PackedBatches(g.tokens("train"), t.seq_len,
                                                                                 t.batch_size, t.seed),
                           g.tokens("valid")) for _ in range(2)]
    assert fps[0] == fps[1]
    assert str(tmp_path.parent) not in json.dumps(fps[0]) and str(REPO) not in json.dumps(fps[0])
    other = run_fingerprint(new_model(cfg, data, seed=1), dataclasses.replace(t, seed=1),
                            PackedBatches(g.tokens("train"), t.seq_len, t.batch_size, 1), g.tokens("valid"))
    assert {k for k in fps[0] if other[k] != fps[0][k]} == {"train.seed"}


def test_bundled_data_fingerprint_does_not_depend_on_where_the_checkout_is(tmp_path, monkeypatch):
    from mlx_pn.data import sources

    before = sources.fingerprint("bundled:legal")
    moved = tmp_path / "elsewhere" / "bundled"
    moved.mkdir(parents=True)
    shutil.copy(sources.BUNDLED_DIR / "legal.jsonl.gz", moved)
    legacy_here = sources.fingerprint("bundled:legal", legacy=True)
    monkeypatch.setattr(sources, "BUNDLED_DIR", moved)
    assert sources.fingerprint("bundled:legal") == before
    assert sources.fingerprint("bundled:legal", legacy=True) != legacy_here  # the old one held the path


def test_shards_with_the_legacy_fingerprint_are_reused(tiny_run, tmp_path):
    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.data.sources import fingerprint

    cfg, _ = tiny_run
    src = cfg.data_dir
    cfg2 = tiny_config(tmp_path, **{"data.dir": str(tmp_path / "data")})
    shutil.copytree(src, tmp_path / "data")
    for name, spec in [("generic", cfg.data.generic)] + list(cfg.data.domains.items()):
        m = tmp_path / "data" / "shards" / name / "manifest.json"
        d = json.loads(m.read_text())
        d["fingerprint"] = fingerprint(spec, legacy=True)  # as an older version wrote it
        m.write_text(json.dumps(d))
    meta = tmp_path / "data" / "tokenizer" / "source.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"generic": fingerprint(cfg.data.generic, True)}))
    lines = []
    prepare_data(cfg2, log=lines.append)
    assert not any("tok/" in ln or "training a" in ln for ln in lines), lines  # nothing rebuilt


@pytest.mark.slow
def test_a_finished_pretraining_rerun_with_another_config_is_not_already_done(pretrained, tmp_path):
    from mlx_pn.fingerprint import StaleRunError
    from mlx_pn.methods import pretrain

    cfg, data, summary = pretrained
    assert summary["fingerprint"]["train.lr"] == cfg.pretrain.lr and "data.train" in summary["fingerprint"]
    lines = []
    assert pretrain(cfg, data, log=lines.append)["fingerprint"] == summary["fingerprint"]
    assert any("already done" in ln for ln in lines)
    for key, value, shown in (("pretrain.lr", "1e-3", r"train\.lr: 0\.003 -> 0\.001"),
                              ("model.hidden_size", "32", r"model\.hidden_size: 64 -> 32")):
        other = tiny_config(cfg.out, **{key: value})
        with pytest.raises(StaleRunError, match=shown):
            pretrain(other, data, log=_quiet)


@pytest.mark.slow
def test_specialize_with_another_model_width_is_an_error(pretrained, tmp_path):
    from mlx_pn.config import ConfigError
    from mlx_pn.methods import specialize

    cfg, data, _ = pretrained
    # a copy of the pretraining alone: other tests specialize in the shared session folder, and a finished
    # specialization there would answer first (stale config), before the model is loaded
    out = tmp_path / "run"
    shutil.copytree(Path(cfg.out) / "pretrain", out / "pretrain")
    other = tiny_config(out, **{"model.hidden_size": "32", "data.dir": str(cfg.data_dir)})
    with pytest.raises(ConfigError, match=r"pretrain/final was pretrained with hidden_size 64 \(config: 32\); drop "
                                          r"model\.hidden_size"):
        specialize(other, data, "legal", log=_quiet)


@pytest.mark.slow
def test_a_finished_routed_pretraining_with_another_model_is_not_already_done(clustered, tmp_path):
    """slm-pn and slm-mix compare the model they would build (width, projected.*) before "already done"; the
    projected model folder's files are checked against their sha256.json when it is loaded."""
    from mlx_pn.fingerprint import StaleRunError
    from mlx_pn.methods import pretrain
    from mlx_pn.models.build import CheckpointError
    from mlx_pn.models.projected import load_projected

    cfg0, data = clustered
    small = {"data.dir": str(cfg0.data_dir), "cluster.k": "4", "pretrain.steps": "4", "pretrain.eval_every": "2",
             "pretrain.save_every": "2"}
    for method, key, value, shown in (("slm-pn", "projected.h", "2", r"model\.projected\.h: 4 -> 2"),
                                      ("slm-pn", "model.hidden_size", "32", r"model\.hidden_size: 64 -> 32"),
                                      ("slm-mix", "model.hidden_size", "32", r"model\.hidden_size: 64 -> 32")):
        cfg = tiny_config(tmp_path, method=method, **small)
        lines = []
        pretrain(cfg, data, log=lines.append)
        pretrain(cfg, data, log=lines.append)
        assert any("already done" in ln for ln in lines)
        with pytest.raises(StaleRunError, match=shown):
            pretrain(tiny_config(tmp_path, method=method, **small, **{key: value}), data, log=_quiet)
    final = tmp_path / "pretrain-slm-pn" / "final"
    assert load_projected(final).pargs.k == 4
    with open(final / "model.safetensors", "r+b") as f:  # one byte of the weights changed on disk
        f.seek(-3, os.SEEK_END)
        b = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing or was changed after it was written"):
        load_projected(final)


@pytest.mark.slow
def test_a_specialization_is_stale_when_its_parent_or_its_domain_changed(pretrained, tmp_path):
    import mlx.core as mx

    from mlx_pn.data.prepare import prepare_data
    from mlx_pn.fingerprint import StaleRunError
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_pn.methods import specialize
    from mlx_pn.models.build import load_model, save_model

    cfg0, _, _ = pretrained
    out = tmp_path / "run"
    shutil.copytree(Path(cfg0.out) / "data", out / "data")
    shutil.copytree(Path(cfg0.out) / "pretrain", out / "pretrain")
    small = {"finetune.steps": "4", "finetune.eval_every": "2", "finetune.save_every": "2", "data.test_windows": "4"}
    cfg = tiny_config(out, **small)
    data = prepare_data(cfg, only=["legal"], log=_quiet)
    r = specialize(cfg, data, "legal", log=_quiet)
    assert r["fingerprint"]["parent.weights"] and r["fingerprint"]["data.domain.train"]
    lines = []
    assert specialize(cfg, data, "legal", log=lines.append)["after"] == r["after"]
    assert any("already done" in ln for ln in lines)
    with pytest.raises(StaleRunError, match=r"finetune\.lr: 0\.001 -> 0\.0005"):
        specialize(tiny_config(out, **small, **{"finetune.lr": "5e-4"}), data, "legal", log=_quiet)
    # --no-resume with a config that fails its checks moves nothing; a good one moves the old run aside
    from mlx_pn.config import ConfigError

    with pytest.raises(ConfigError, match="hidden_size 64 \\(config: 32\\)"):
        specialize(tiny_config(out, **small, **{"model.hidden_size": "32"}), data, "legal", resume=False, log=_quiet)
    assert (out / "specialize" / "legal" / "results.json").exists()
    assert not list((out / "specialize").glob("legal.old-*"))
    specialize(cfg, data, "legal", resume=False, log=_quiet)
    (aside,) = list((out / "specialize").glob("legal.old-*"))
    assert (aside / "results.json").exists() and (aside / "checkpoints").is_dir()

    # the parent changed (pretrained again, differently): the old results are stale
    final = out / "pretrain" / "final"
    model = load_model(final)
    flat = [(k, v + 1e-3 if k.endswith("embed_tokens.weight") else v) for k, v in tree_flatten(model.parameters())]
    model.update(tree_unflatten(flat))
    mx.eval(model.parameters())
    save_model(final, model)
    with pytest.raises(StaleRunError, match=r"parent\.weights"):
        specialize(cfg, data, "legal", log=_quiet)

    # the domain's text changed: its shards are rebuilt, the specialization is stale
    (tmp_path / "legal.jsonl").write_text("".join(json.dumps({"text": f"Article {i}. The court held {i * 7} times."})
                                                  + "\n" for i in range(300)))
    cfg3 = tiny_config(out, **small, **{"data.domains": f"legal={tmp_path / 'legal.jsonl'}"})
    data3 = prepare_data(cfg3, only=["legal"], log=_quiet)
    with pytest.raises(StaleRunError, match=r"data\.domain\.(test|train|valid)"):
        specialize(cfg3, data3, "legal", log=_quiet)


# --- tampering -------------------------------------------------------------------------------------------


def _three(tiny_run, tmp_path):
    cfg, data = tiny_run
    out = tmp_path / "run"
    _train(cfg, data, out, steps=8)  # checkpoints step_4 and step_8 (keep 2)
    return cfg, data, out


def test_a_checkpoint_without_its_sha256_map_or_with_an_edited_step_is_not_trusted(tiny_run, tmp_path):
    from mlx_pn.train.checkpoint import latest_good_checkpoint

    cfg, data, out = _three(tiny_run, tmp_path)
    last = out / "checkpoints" / "step_0000008" / "state.json"
    good = json.loads(last.read_text())
    for edit, why in ((lambda s: s.pop("sha256"), "has no sha256"),
                      (lambda s: s.update(step=10 ** 9), "says step 1000000000 in a folder named step_0000008")):
        s = json.loads(json.dumps(good))
        edit(s)
        last.write_text(json.dumps(s))
        with pytest.warns(RuntimeWarning, match=why):
            path, _ = latest_good_checkpoint(out / "checkpoints")
        assert path.name == "step_0000004"  # the one before it is used
    last.write_text(json.dumps(good))


@pytest.mark.slow
def test_an_edited_step_with_a_renamed_folder_is_refused(tiny_run, tmp_path):
    from mlx_pn.models.build import CheckpointError
    from mlx_pn.train.state import TrainingError

    cfg, data, out = _three(tiny_run, tmp_path)
    ck = out / "checkpoints"
    state = json.loads((ck / "step_0000008" / "state.json").read_text())
    state["step"] = 10 ** 9
    (ck / "step_0000008" / "state.json").write_text(json.dumps(state))
    os.rename(ck / "step_0000008", ck / f"step_{10 ** 9:07d}")
    with pytest.raises(TrainingError, match="is at step 1000000000, past the 8 steps"):
        _train(cfg, data, out, steps=8)
    # the same edit within the planned steps: its token count gives it away
    state["step"] = 6
    (ck / f"step_{10 ** 9:07d}" / "state.json").write_text(json.dumps(state))
    os.rename(ck / f"step_{10 ** 9:07d}", ck / "step_0000006")
    with pytest.raises(CheckpointError, match="tokens trained is not 6 steps"):
        _train(cfg, data, out, steps=8)


QUICK = ("python -m recipes.pretrain --config recipes/configs/tiny.yaml --out {out} --data.max_docs 120 "
         "--pretrain.steps 16 --pretrain.save_every 2 --pretrain.eval_every 8 --pretrain.eval_batches 2")


@pytest.mark.slow
def test_killtest_two_launches_at_once_end_as_one_run(tmp_path):
    """tools/killtest --mode concurrent: B starts while A trains; one of them is refused by the lock (or finds
    the run done), nothing else fails, and the outputs equal the uninterrupted run's."""
    from tools.killtest import format_report, run

    reports = run({"pretrain": QUICK}, tmp_path, kills=1, seed=0, mode="concurrent", log=_quiet)
    text = format_report(reports, 0, "concurrent")
    (r,) = reports
    assert not r.problems and r.compared_files > 5, text
    # seed 0: B starts while A is still training and is refused by the lock (every run on an idle machine); on a
    # loaded one B's start-up can outlast A's training, and then B must find the run done, not train it again
    b_log = (tmp_path / "logs" / "pretrain" / "b-001.log").read_text(errors="replace")
    assert r.lock_refusals == 1 or "already done" in b_log, text + b_log[-1500:]


@pytest.mark.slow
def test_killtest_sigterm_resumes_to_identical_outputs(tmp_path):
    import signal

    from tools.killtest import format_report, run

    reports = run({"pretrain": QUICK}, tmp_path, kills=1, seed=1, log=_quiet, sig=signal.SIGTERM)
    text = format_report(reports, 1, "time")
    (r,) = reports
    assert not r.problems and r.kills == 1 and len(r.exit_codes) == 1, text
