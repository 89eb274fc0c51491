"""End to end on real text through the recipes' own entry points: pretrain -> specialize -> export
-> mlx-lm (Python API and `python -m mlx_lm generate`)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY

from recipes import export as export_recipe
from recipes import pretrain as pretrain_recipe
from recipes import specialize as specialize_recipe


def argv(out, *extra):
    return ["--config", str(TINY), "--out", str(out), "--data.max_docs", "300", "--pretrain.steps", "40",
            "--finetune.steps", "20", *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    pretrain_recipe.main(argv(out))
    specialize_recipe.main(argv(out, "--domain", "legal"))
    export_recipe.main(argv(out, "--domain", "legal"))
    return out


def test_pretraining_loss_fell(run_dir):
    rows = [json.loads(x) for x in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid_nll"] for r in rows if "valid_nll" in r]
    assert valid[-1] < valid[0] - 0.5


def test_fine_tuning_lowers_domain_perplexity(run_dir):
    r = json.loads((run_dir / "specialize" / "legal" / "results.json").read_text())
    assert r["after"]["legal"]["ppl"] < r["before"]["legal"]["ppl"] * 0.9
    assert r["before"]["legal"]["bpb"] > 0 and r["config"]["domain"] == "legal"


def test_export_generates_through_mlx_lm_cli(run_dir):
    folder = run_dir / "export" / "legal"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(folder), "--prompt",
                        "Permission is hereby granted", "--max-tokens", "12", "--temp", "0"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Generation: 12 tokens" in p.stdout or "Generation:" in p.stdout


def test_rerun_skips_finished_stages(run_dir, capsys):
    pretrain_recipe.main(argv(run_dir))
    specialize_recipe.main(argv(run_dir, "--domain", "legal"))
    out = capsys.readouterr().out
    assert "already done" in out


def test_specialize_with_other_tokenizer_is_clear(run_dir, tmp_path, capsys):
    """A pretrained model paired with a tokenizer of another vocabulary size: a clear error."""
    with pytest.raises(SystemExit) as e:
        specialize_recipe.main(argv(run_dir, "--domain", "legal", "--data.dir", str(tmp_path / "d"),
                                    "--data.vocab_size", "700", "--no-resume"))
    assert e.value.code == 2
    assert "vocab_size=1024 but the tokenizer" in capsys.readouterr().err


def test_unknown_domain_is_clear(run_dir, capsys):
    with pytest.raises(SystemExit):
        specialize_recipe.main(argv(run_dir, "--domain", "lega"))
    assert "domain 'lega' is not in data.domains" in capsys.readouterr().err


def test_every_recipe_has_help():
    for name in ("pretrain", "specialize", "export", "quickstart"):
        p = subprocess.run([sys.executable, "-m", f"recipes.{name}", "--help"], capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        assert p.returncode == 0 and "--pretrain.lr" in p.stdout and "--config" in p.stdout, name


def test_training_curves_png(run_dir, tmp_path):
    from mlx_pn.plots import plot_training_curves

    png = plot_training_curves({"pretrain": run_dir / "pretrain" / "metrics.jsonl",
                                "legal": run_dir / "specialize" / "legal" / "metrics.jsonl"}, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
