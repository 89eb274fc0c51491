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


@pytest.mark.slow
def test_export_generates_through_mlx_lm_cli(run_dir):
    """`python -m mlx_lm generate` on the export prints the same greedy continuation, with the same token
    count, as mlx-lm's Python API: 12 tokens unless the model ended the text (EOS) sooner."""
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    folder, prompt = run_dir / "export" / "legal", "Permission is hereby granted"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(folder), "--prompt",
                        prompt, "--max-tokens", "12", "--temp", "0"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    model, tokenizer = load(str(folder))
    steps = list(stream_generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(temp=0.0)))
    text, last = "".join(s.text for s in steps), steps[-1]
    assert last.generation_tokens == 12 or last.finish_reason == "stop"
    assert text.strip() and f"==========\n{text}\n==========" in p.stdout, p.stdout
    assert f"Generation: {last.generation_tokens} tokens," in p.stdout, p.stdout


def test_rerun_skips_finished_stages(run_dir, capsys, monkeypatch):
    import mlx_pn.train.loop as loop

    def no_training(*a, **k):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(loop, "train", no_training)
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


RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.py") if not p.stem.startswith("_"))
NO_CONFIG = {"plan"}  # recipes without a training config (mlx_pn.recipes.plan)


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_help(name):
    p = subprocess.run([sys.executable, "-m", f"recipes.{name}", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    if name in NO_CONFIG:  # reads a grid's results.json, trains nothing: no config keys
        assert "--grid" in p.stdout and "--config" not in p.stdout, name
        return
    assert "--pretrain.lr" in p.stdout and "--config" in p.stdout, name


def test_default_config_is_read_and_shown(tmp_path):
    """A recipe's default config (quickstart: recipes/configs/quickstart.yaml) applies without --config,
    is replaced by --config, and --help names it."""
    import re

    from mlx_pn.cli import build_parser, parse
    from mlx_pn.config import load_file
    from recipes import quickstart

    steps = {f: load_file(f)["pretrain"]["steps"] for f in (quickstart.DEFAULT_CONFIG, TINY)}
    assert steps[quickstart.DEFAULT_CONFIG] != steps[TINY]
    parser = build_parser("x", default_config=quickstart.DEFAULT_CONFIG)
    cfg, _ = parse(parser, ["--out", str(tmp_path)])
    assert cfg.pretrain.steps == steps[quickstart.DEFAULT_CONFIG] and cfg.out == str(tmp_path)
    cfg, _ = parse(parser, ["--config", str(TINY)])
    assert cfg.pretrain.steps == steps[TINY]
    assert re.search(r"default: \S*recipes/configs/quickstart\.yaml", " ".join(parser.format_help().split()))
    assert build_parser("x").parse_args([]).config is None  # no default: the dataclass defaults alone


def test_training_curves_png(run_dir, tmp_path):
    from mlx_pn.plots import plot_training_curves

    png = plot_training_curves({"pretrain": run_dir / "pretrain" / "metrics.jsonl",
                                "legal": run_dir / "specialize" / "legal" / "metrics.jsonl"}, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_quickstart_runs_end_to_end_on_tiny_settings(tmp_path, capsys):
    """The README's main job, shrunk: data -> pretrain -> fine-tune -> export -> mlx-lm generation."""
    from recipes import quickstart

    quickstart.main(["--out", str(tmp_path), "--model.preset", "tiny", "--data.vocab_size", "1000",
                     "--data.max_docs", "200", "--pretrain.steps", "20", "--pretrain.seq_len", "64",
                     "--finetune.steps", "10", "--finetune.seq_len", "64", "--pretrain.compile", "false",
                     "--finetune.compile", "false"])
    out = capsys.readouterr().out
    assert "| drama |" in out and "python -m mlx_pn.lm generate --model" in out
    md = (tmp_path / "quickstart.md").read_text()
    assert "Generated by mlx-lm" in md and (tmp_path / "quickstart.png").stat().st_size > 10_000
    # the fine-tuning budget's cap that ended the run, and a line per evaluated test split (before and after)
    assert "Fine-tuning: 10 of 10 planned steps, stopped by steps (best at step " in md
    assert out.count("[evaluate] drama.test: ppl") == 2 and out.count("[evaluate] generic.test: ppl") == 2
    result = json.loads((tmp_path / "quickstart.json").read_text())
    # <= 1e-5, not 0: our MLP's fast silu vs mlx-lm's nn.silu (mlx_pn.models.ops)
    assert result["export"]["max_abs_logit_diff"] <= 1e-5 and len(result["samples"]) == 2
    # the demo samples too (temperature 0.8, top-p 0.9, seeded), shown in the output and in quickstart.md
    s = result["samples"][0]
    assert s["sampling"] == {"temp": 0.8, "top_p": 0.9, "seed": 0} and s["sampled"].strip()
    line = f"- sampled (temperature 0.8, top-p 0.9): **{s['prompt']}**{s['sampled']}"
    assert line in md and line in out
    assert (tmp_path / "export" / "drama" / "README.md").read_text().startswith("---\nlibrary_name: mlx\n")


def test_mlx_pn_lm_unknown_subcommand_is_one_line(capsys):
    """`mlx-pn lm nosuch` was mlx-lm's ValueError traceback."""
    from mlx_pn import lm

    with pytest.raises(SystemExit) as e:
        lm.main(["generat", "--model", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unknown subcommand 'generat'; did you mean 'generate'?" in err
    assert "perplexity" in err and "Traceback" not in err
