"""A specialization and the pretrained model it starts from (issue 23): the model's shape is read from the
checkpoint (no --model.* flag to repeat), and results.json records the weights fine-tuning started from even
when the parent is replaced meanwhile."""

import json
import subprocess
import sys

import pytest

from conftest import tiny_config

pytestmark = pytest.mark.slow  # trains a tiny model per test

SMALL = {"pretrain.steps": "4", "pretrain.eval_every": "2", "pretrain.save_every": "2", "finetune.steps": "4",
         "finetune.eval_every": "2", "finetune.save_every": "2"}


def _cfg(tiny_run, out, **kw):
    cfg0, _ = tiny_run
    return tiny_config(out, **{"data.dir": str(cfg0.data_dir), **SMALL, **kw})


def test_specialize_reads_the_model_shape_from_its_pretraining(tiny_run, tmp_path):
    from mlx_pn.config import ConfigError
    from mlx_pn.methods import pretrain, specialize

    _, data = tiny_run
    pretrain(_cfg(tiny_run, tmp_path, **{"model.num_hidden_layers": "3"}), data, log=lambda *a: None)
    lines = []
    r = specialize(_cfg(tiny_run, tmp_path), data, "legal", log=lines.append)  # the flag not repeated
    said = [ln for ln in lines if "shape is read from the pretrained model" in ln]
    assert len(said) == 1 and "num_hidden_layers 3 (preset 'tiny': 2)" in said[0], lines
    assert r["config"]["model"]["num_hidden_layers"] == 3
    cfg_json = json.loads((tmp_path / "specialize" / "legal" / "final" / "config.json").read_text())
    assert cfg_json["num_hidden_layers"] == 3
    # the same flag repeated is the same specialization: already done, not stale
    lines = []
    specialize(_cfg(tiny_run, tmp_path, **{"model.num_hidden_layers": "3"}), data, "legal", log=lines.append)
    assert any("already done" in ln for ln in lines), lines
    # a flag asking for another shape than the checkpoint's is refused, naming both
    with pytest.raises(ConfigError, match=r"pretrained with num_hidden_layers 3 \(config: 4\); drop "
                                          r"model\.num_hidden_layers"):
        specialize(_cfg(tiny_run, tmp_path, **{"model.num_hidden_layers": "4"}), data, "legal", log=lambda *a: None)


def test_results_record_the_parent_weights_training_started_from(tiny_run, tmp_path, monkeypatch):
    """A `pretrain --no-resume` replacing the parent while the specialization fine-tunes: results.json keeps the
    hash of the weights that were loaded, and the next run says the specialization is stale (not 'already done')."""
    from mlx_pn.fingerprint import StaleRunError, parent_sha256
    from mlx_pn.methods import finetune as ft, pretrain, specialize
    from mlx_pn.models.build import build_model, save_model

    _, data = tiny_run
    cfg = _cfg(tiny_run, tmp_path)
    pretrain(cfg, data, log=lambda *a: None)
    src = tmp_path / "pretrain" / "final"
    loaded = parent_sha256(src)
    real = ft.finetune

    def replaced_meanwhile(cfg_, data_, model, *a, **k):
        other = build_model(model.args, seed=123)  # another parent under the same name, as --no-resume makes
        save_model(src, other)
        return real(cfg_, data_, model, *a, **k)

    monkeypatch.setattr(ft, "finetune", replaced_meanwhile)
    lines = []
    r = specialize(cfg, data, "legal", log=lines.append)
    assert parent_sha256(src) != loaded
    saved = json.loads((tmp_path / "specialize" / "legal" / "results.json").read_text())
    assert r["fingerprint"]["parent.weights"] == saved["fingerprint"]["parent.weights"] == loaded
    assert "read" not in saved
    assert any("parent.weights changed on disk while this ran" in ln for ln in lines), lines
    monkeypatch.setattr(ft, "finetune", real)
    with pytest.raises(StaleRunError, match=r"parent\.weights"):
        specialize(cfg, data, "legal", log=lambda *a: None)


def test_specialize_waits_for_a_pretraining_holding_its_parents_lock(tiny_run, tmp_path):
    from mlx_pn.methods import pretrain, specialize
    from mlx_pn.runlock import RunLockError

    _, data = tiny_run
    cfg = _cfg(tiny_run, tmp_path)
    pretrain(cfg, data, log=lambda *a: None)
    stage = tmp_path / "pretrain"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mlx_pn import runlock; "
                               "runlock.acquire(sys.argv[1], print); print('held', flush=True); time.sleep(60)",
                               str(stage)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockError, match=f"pid {holder.pid} is writing {stage}"):
            specialize(cfg, data, "legal", log=lambda *a: None)
        assert not (tmp_path / "specialize" / "legal" / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_rerun_with_another_cap_reuses_the_before_numbers(tiny_run, tmp_path, monkeypatch):
    """`--finetune.steps N --no-resume` after a finished specialization: the parent and the test splits are the same,
    so the "before fine-tuning" perplexities are read back (before.json), not measured again; another parent's are."""
    from mlx_pn.methods import finetune as ft, pretrain, specialize

    _, data = tiny_run
    pretrain(_cfg(tiny_run, tmp_path), data, log=lambda *a: None)
    first = specialize(_cfg(tiny_run, tmp_path), data, "legal", log=lambda *a: None)
    calls = []
    real = ft.measure
    monkeypatch.setattr(ft, "measure", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
    lines = []
    again = specialize(_cfg(tiny_run, tmp_path, **{"finetune.steps": "2"}), data, "legal", resume=False,
                       log=lines.append)
    assert calls == ["after fine-tuning"], calls
    assert again["before"] == first["before"] and again["finetune_steps"] == 2
    assert any("before fine-tuning: the numbers measured for these weights" in ln for ln in lines), lines
    pretrain(_cfg(tiny_run, tmp_path, **{"pretrain.steps": "6"}), data, resume=False, log=lambda *a: None)
    calls.clear()
    other = specialize(_cfg(tiny_run, tmp_path, **{"pretrain.steps": "6"}), data, "legal", resume=False,
                       log=lambda *a: None)
    assert calls == ["before fine-tuning", "after fine-tuning"] and other["before"] != first["before"]


@pytest.mark.parametrize("method", ["slm-pn", "slm-mix"])
def test_routed_methods_read_the_model_shape_from_their_pretraining(clustered, tmp_path, method):
    """The projected network's trunk and the mixture's experts: a pretraining with a non-default shape is
    specialized without repeating the flag, and the results record the shape that was trained."""
    from mlx_pn.methods import pretrain, specialize

    _, data = clustered
    kw = {"method": method, "cluster.k": "4", "model.num_hidden_layers": "3"}
    pretrain(_cfg(clustered, tmp_path, **kw), data, log=lambda *a: None)
    lines = []
    kw.pop("model.num_hidden_layers")
    r = specialize(_cfg(clustered, tmp_path, **kw), data, "legal", log=lines.append)
    assert any("num_hidden_layers 3 (preset 'tiny': 2)" in ln for ln in lines), lines
    assert r["config"]["model"]["num_hidden_layers"] == 3
