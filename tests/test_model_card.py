"""`mlx-pn export` as a user shares a model: the model card README.md (front matter, method, data, tokens,
measured perplexities, reproduce commands), folders readable under the user's umask, the hint lines, a clear
message for a routed method's pretraining folder, and `python -m mlx_pn.lm` running the printed command."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY

from recipes import export as export_recipe
from recipes import specialize as specialize_recipe


@pytest.fixture(scope="module")
def exported(pretrained, tmp_path_factory):
    """(cfg, export folder, results.json, export's stdout) after a short fine-tuning, exported under umask 027."""
    cfg, _, _ = pretrained
    common = ["--config", str(TINY), "--out", cfg.out, "--data.dir", str(cfg.data_dir), "--data.max_docs", "300",
              "--pretrain.steps", "40", "--finetune.steps", "4", "--finetune.eval_every", "2",
              "--data.test_windows", "4", "--domain", "legal"]
    specialize_recipe.main(common)
    dest = tmp_path_factory.mktemp("share") / "legal-card"
    old = os.umask(0o027)
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            export_recipe.main(common + ["--to", str(dest), "--base-model", "someone/generic-slm"])
    finally:
        os.umask(old)
    from mlx_pn.methods.layout import specialize_dir

    results = json.loads((specialize_dir(cfg, "legal") / "results.json").read_text())
    return cfg, dest, results, buf.getvalue()


def test_export_folder_follows_the_umask(exported):
    _, dest, _, _ = exported
    assert oct(dest.stat().st_mode & 0o777) == oct(0o750)  # not mkdtemp's 0o700
    assert oct((dest / "model.safetensors").stat().st_mode & 0o777) == oct(0o640)


def test_model_card_front_matter_and_measured_numbers(exported):
    cfg, dest, r, _ = exported
    text = (dest / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "mlx" and front["base_model"] == "someone/generic-slm"
    assert {"mlx", "mlx-pn", "slm", "legal"} <= set(front["tags"])
    for split in ("legal", "generic"):
        b, a = r["before"][split], r["after"][split]
        row = f"| {split} | {b['ppl']:.2f} | {a['ppl']:.2f} | {b['bpb']:.3f} | {a['bpb']:.3f} |"
        assert row in text, (row, text)
    assert "method: `slm`" in text and "`bundled:legal`" in text and f"{r['domain_train_tokens']:,} training tokens" in text
    assert re.search(r"\| [\d,]+ seen in pretraining \|", text) and "seen in fine-tuning" in text
    assert "--num-layers -1" in text and "mlx_lm.server --model" in text


def test_reproduce_commands_read_the_written_config(exported):
    """The card's commands use mlx-pn-config.yaml, which loads back as the run's own config."""
    from mlx_pn.methods import load_config

    cfg, dest, _, _ = exported
    text = (dest / "README.md").read_text()
    block = text.split("## Reproduce")[1].split("```bash\n")[1].split("```")[0].splitlines()
    assert block == ["mlx-pn pretrain --config mlx-pn-config.yaml", "mlx-pn specialize --config mlx-pn-config.yaml",
                     "mlx-pn export --config mlx-pn-config.yaml"]
    again = load_config(dest / "mlx-pn-config.yaml")
    # portable: the run folder by its name, no folder of this machine
    assert (again.method, again.domain, again.out, again.finetune.steps) == (
        cfg.method, "legal", f"runs/{Path(cfg.out).name}", 4)


def test_export_prints_the_hint_lines(exported):
    _, dest, _, out = exported
    # each step is said as it starts (writing, verifying with mlx-lm), then the verification's result
    lines = out.splitlines()
    starts = [next(i for i, ln in enumerate(lines) if ln.startswith(p)) for p in (
        f"[export] {dest}: writing 0.", "[export] verifying: loading it with mlx_lm.load", "[export] verified in ")]
    assert starts == sorted(starts), out
    assert re.search(r"max \|logit diff\| [0-9.e-]+, greedy token agreement 100%", out), out
    for hint in (f"mlx-pn lm generate --model {dest}", f"mlx_lm.server --model {dest}",
                 f"mlx_lm lora --model {dest} --train --data DATA_DIR --num-layers -1",
                 f"mlx_lm upload --path {dest} --upload-repo USER/NAME",
                 f"try it: python -m mlx_pn.lm generate --model {dest}"):
        assert hint in out, (hint, out)


@pytest.mark.slow
def test_printed_command_runs_through_mlx_pn_lm(exported):
    """`python -m mlx_pn.lm generate` (what export prints) is mlx-lm's CLI: same greedy text as mlx-lm's API."""
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    _, dest, _, _ = exported
    prompt = "Permission is hereby granted"
    p = subprocess.run([sys.executable, "-m", "mlx_pn.lm", "generate", "--model", str(dest), "--prompt", prompt,
                        "--max-tokens", "8", "--temp", "0"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    model, tok = load(str(dest))
    text = generate(model, tok, prompt, max_tokens=8, sampler=make_sampler(temp=0.0))
    assert f"==========\n{text}\n==========" in p.stdout, p.stdout


def test_routed_pretraining_folder_says_what_to_export(pretrained, tmp_path, capsys):
    """A slm-pn pretraining folder (config.json with its 'projected' section) is refused with the folder to use."""
    from mlx_pn.models.build import save_model
    from mlx_pn.models.projected import ProjectedArgs, build_projected, projected_config
    from mlx_pn.models.transformer import ModelArgs

    cfg, _, _ = pretrained
    model = build_projected(ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                      num_attention_heads=2, vocab_size=cfg.data.vocab_size), ProjectedArgs(k=2))
    src = tmp_path / "out" / "pretrain-slm-pn" / "final"
    save_model(src, model, projected_config(model, "slm-pn"))
    with pytest.raises(SystemExit) as e:
        export_recipe.main(["--config", str(TINY), "--out", str(tmp_path / "out"), "--data.dir", str(cfg.data_dir),
                            "--model", str(src), "--to", str(tmp_path / "exp")])
    msg = str(e.value) + capsys.readouterr().err
    assert "its config.json has a 'projected' section" in msg, msg
    assert f"export the specialized model: {tmp_path / 'out'}/specialize-slm-pn/DOMAIN/final" in msg, msg
    assert not (tmp_path / "exp").exists()


def test_card_of_a_model_trained_from_scratch_and_without_results(tmp_path):
    from mlx_pn.model_card import render

    report = {"path": str(tmp_path / "m"), "params": 1234, "dtype": "float32", "quantize": 4}
    r = {"method": "slm-nopt", "domain": "law", "pretrained_from": None, "before": {"law": {"ppl": 9.0, "bpb": 3.0}},
         "after": {"law": {"ppl": 5.0, "bpb": 2.0}}, "config": {"data": {"domains": {"law": "/d/law"}}}}
    text = render(report, r, needs_clusters=False)
    assert "trained from scratch on the `law` domain" in text and "4-bit quantized" in text
    assert "| law | 9.00 | 5.00 | 3.000 | 2.000 |" in text and "mlx-pn export --config mlx-pn-config.yaml --quantize 4" in text
    bare = render(report, None)
    assert "no measured perplexities" in bare and "library_name: mlx" in bare and "base_model" not in bare


# --- issue 23: what survives mlx-lm's tools, no local paths, the run found from the model folder ----------------


def test_card_essentials_survive_mlx_lm_upload_and_name_no_local_path(exported):
    """`mlx_lm upload` replaces README.md's text and keeps its front matter (huggingface_hub.ModelCard): the method,
    the test perplexities and test-split sizes, license and language are there; no file names a local folder."""
    from huggingface_hub import ModelCard

    cfg, dest, r, _ = exported
    card = ModelCard.load(dest / "README.md")
    card.text = "# USER/NAME\n(mlx-lm's own text)"  # what upload_to_hub does
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta["license"] == "other" and meta["language"] == ["en"] and meta["library_name"] == "mlx"
    ess = meta["mlx_pn"]
    assert (ess["method"], ess["domain"], ess["parameters"]) == ("slm", "legal", r and ess["parameters"])
    for split in ("legal", "generic"):
        assert ess["test"][split]["ppl_after"] == round(r["after"][split]["ppl"], 3)
        assert ess["test"][split]["tokens"] == r["after"][split]["tokens"] > 0
    text = (dest / "README.md").read_text()
    assert "from mlx_lm import load, generate" in text and "model, tokenizer = load(" in text
    assert f"| {r['after']['legal']['tokens']:,} |" in text  # the test split's size in the table
    for f in ("README.md", "mlx-pn-config.yaml"):
        body = (dest / f).read_text()
        for local in (str(Path(cfg.out).parent), str(Path.home()), str(dest.parent)):
            assert local not in body, (f, local)


def test_export_of_a_model_folder_finds_its_runs_tokenizer(exported, tmp_path, capsys):
    """`mlx-pn export --model RUN/specialize/DOMAIN/final` (no --tokenizer, no --data.dir): the run's tokenizer."""
    from mlx_pn.methods.layout import specialize_dir

    cfg, _, _, _ = exported
    src = specialize_dir(cfg, "legal") / "final"
    export_recipe.main(["--config", str(TINY), "--model", str(src), "--to", str(tmp_path / "e")])
    assert (tmp_path / "e" / "README.md").exists() and "rebuild the tokenizer" not in capsys.readouterr().err


def test_export_without_weights_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_recipe.main(["--config", str(TINY), "--model", str(tmp_path / "none"), "--to", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.safetensors does not exist" in err and len(err.strip().splitlines()) == 1


def test_export_waits_for_a_specialization_holding_its_lock(exported, tmp_path, capsys):
    from mlx_pn.methods.layout import specialize_dir

    cfg, _, _, _ = exported
    stage = specialize_dir(cfg, "legal")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mlx_pn import runlock; "
                               "runlock.acquire(sys.argv[1], print); print('held', flush=True); time.sleep(60)",
                               str(stage)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as e:
            export_recipe.main(["--config", str(TINY), "--model", str(stage / "final"), "--to", str(tmp_path / "e")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"pid {holder.pid} is writing {stage}" in err, err
        assert not (tmp_path / "e").exists()
    finally:
        holder.kill()
        holder.wait()


def test_an_export_cut_short_after_its_rename_is_completed_on_rerun(exported, tmp_path, capsys):
    """The card is written before the rename now; an export from before that, killed after its rename (no README.md
    nor mlx-pn-config.yaml), is redone by the same command instead of 'already exists; pass --force'."""
    from mlx_pn.methods.layout import specialize_dir

    cfg, _, _, _ = exported
    argv = ["--config", str(TINY), "--model", str(specialize_dir(cfg, "legal") / "final"), "--to", str(tmp_path / "e")]
    export_recipe.main(argv)
    (tmp_path / "e" / "README.md").unlink()
    (tmp_path / "e" / "mlx-pn-config.yaml").unlink()
    export_recipe.main(argv)
    assert (tmp_path / "e" / "README.md").exists() and (tmp_path / "e" / "mlx-pn-config.yaml").exists()
    assert "has no README.md (an export stopped after its rename): writing it again" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # a complete export still needs --force
        export_recipe.main(argv)
    assert e.value.code == 2 and "already exists; pass --force" in capsys.readouterr().err


def test_quantized_export_says_the_real_parameter_count(exported, tmp_path):
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.methods.layout import specialize_dir
    from mlx_pn.models.build import load_model

    cfg, _, _, _ = exported
    model = load_model(specialize_dir(cfg, "legal") / "final")
    lines = []
    export_mlx_lm(model, cfg.data_dir / "tokenizer" / "hf", tmp_path / "q", quantize=4, group_size=32, verify=False,
                  log=lines.append)
    n = model.num_params()
    assert f"writing {n / 1e6:.2f}M parameters (4-bit" in lines[0], lines


def test_the_exports_hints_mention_serving_many_specialists():
    from mlx_pn.model_card import usage_lines

    lines = usage_lines("runs/x/export/legal")
    assert any(line.startswith("serve many:") and "mlx-pn serve" in line and "auto" in line for line in lines)


@pytest.mark.slow
def test_the_printed_commands_show_text(exported):
    """Greedy decoding of a tiny export repeats one piece (60 commas for 'The'; this fixture's: 'the the the ...'):
    the command export prints and the card's Python snippet sample (model_card.SAMPLING), so what a user copies
    shows text, not one piece repeated."""

    def shows_text(s: str) -> bool:
        return len(re.findall(r"[A-Za-z]", s)) >= 10 and len(set(s.split())) >= 5

    _, dest, _, out = exported
    line = next(ln for ln in out.splitlines() if ln.startswith("try it: "))
    argv = line[len("try it: "):].split()
    assert argv[:3] == ["python", "-m", "mlx_pn.lm"] and "--temp" in argv and "--seed" in argv, line
    p = subprocess.run([sys.executable] + [a.strip("'") for a in argv[1:]], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    text = p.stdout.split("==========")[1]
    assert shows_text(text), text
    card = (dest / "README.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0].replace('"USER/NAME"', repr(str(dest)))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(snippet, "card snippet", "exec"), {})
    assert shows_text(buf.getvalue()), buf.getvalue()
