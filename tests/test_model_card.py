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
    assert (again.method, again.domain, again.out, again.finetune.steps) == (cfg.method, "legal", cfg.out, 4)


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
