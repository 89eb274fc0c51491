"""Bad input, one case at a time: each gives one clear error naming the file or config field, and the fix.

Through the library (the exception and its message) and, for a few, through a recipe's command line
(exit status 2, one line on stderr, no traceback)."""

import gzip
import json
import shutil
from collections import namedtuple

import numpy as np
import pytest

from conftest import TINY

from mlx_pn.config import ConfigError
from mlx_pn.methods import load_config
from mlx_pn.data.sources import DataError, load_documents


def argv(out, *extra):
    return ["--config", str(TINY), "--out", str(out), "--data.max_docs", "300", "--pretrain.steps", "40",
            "--finetune.steps", "20", *extra]


def exits_clearly(main, args, capsys, *needles):
    """main(args) exits with status 2 and prints one `error:` line holding every needle."""
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# --- corpus files ---------------------------------------------------------------------------------

Case = namedtuple("Case", "files spec match")
CORPUS_CASES = {
    "missing file": Case({}, "nope.txt", r"data.domains.law: '.*nope.txt' does not exist; fix the path"),
    "empty .txt": Case({"a.txt": b""}, "a.txt", r"data.domains.law: '.*a.txt' holds no non-empty documents"),
    "whitespace-only .txt": Case({"a.txt": b" \n\t\n"}, "a.txt", r"holds no non-empty documents; point it at real"),
    "empty .jsonl": Case({"a.jsonl": b""}, "a.jsonl", r"'.*a.jsonl' holds no non-empty documents"),
    "empty folder": Case({"sub/readme": b"x"}, "sub", r"data.domains.law: folder .*sub holds no .txt/"),
    "non-UTF-8 .txt": Case({"l.txt": "caf\xe9".encode("latin-1")}, "l.txt",
                           r"l.txt: not valid UTF-8 \(byte 3: .*iconv -f latin1"),
    "non-UTF-8 .jsonl line": Case({"l.jsonl": b'{"text": "ok"}\n{"text": "caf\xe9"}\n'}, "l.jsonl",
                                  r"l.jsonl:2: not valid UTF-8"),
    "invalid JSON line": Case({"b.jsonl": b'{"text": "ok"}\n{"text": \n'}, "b.jsonl",
                              r"b.jsonl:2: invalid JSON .*one JSON object"),
    "no text field": Case({"b.jsonl": b'{"body": "x"}\n'}, "b.jsonl",
                          r"b.jsonl:1: expected an object with a string field 'text'"),
    "text not a string": Case({"b.jsonl": b'{"text": 5}\n'}, "b.jsonl", r"b.jsonl:1: expected an object"),
    "JSON list line": Case({"b.jsonl": b'["text"]\n'}, "b.jsonl", r"b.jsonl:1: expected an object"),
    "gzip that is not gzip": Case({"c.jsonl.gz": b"plain text"}, "c.jsonl.gz", r"c.jsonl.gz: not a valid gzip file"),
    "truncated gzip": Case({"c.jsonl.gz": gzip.compress(b'{"text": "a"}\n' * 50)[:-12]}, "c.jsonl.gz",
                           r"c.jsonl.gz: not a valid gzip file after line \d+ .*gzip -t"),
    "lone surrogate escape": Case({"s.jsonl": b'{"text": "a \\ud800 b"}\n'}, "s.jsonl",
                                  r"s.jsonl:1: field 'text' holds an invalid \\u escape"),
    "unknown bundled corpus": Case({}, "bundled:poetry", r"data.domains.law: no bundled corpus 'poetry'; available"),
}


@pytest.mark.parametrize("case", list(CORPUS_CASES), ids=list(CORPUS_CASES))
def test_bad_corpus_files(case, tmp_path):
    c = CORPUS_CASES[case]
    for name, data in c.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    spec = c.spec if c.spec.startswith("bundled:") else str(tmp_path / c.spec)
    with pytest.raises(DataError, match=c.match):
        load_documents(spec, "data.domains.law")


def test_bad_generic_through_the_recipe(tmp_path, capsys):
    from recipes import pretrain

    (tmp_path / "g.txt").write_bytes(b"caf\xe9 bad bytes")  # latin-1 (\xff\xfe would be a UTF-16 byte-order mark)
    exits_clearly(pretrain.main, argv(tmp_path / "o", "--data.generic", str(tmp_path / "g.txt")), capsys,
                  "g.txt: not valid UTF-8", "iconv")


# --- a domain too small ---------------------------------------------------------------------------


@pytest.fixture
def run_copy(pretrained, tmp_path):
    """A copy of the session's tiny pretrained run (data + pretrain/final), safe to add domains to."""
    cfg, data, _ = pretrained
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(cfg.data_dir, out / "data")
    shutil.copytree(f"{cfg.out}/pretrain", out / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
    return out


def test_domain_smaller_than_one_batch(run_copy, capsys):
    from recipes import specialize

    dom = run_copy / "small"
    dom.mkdir()
    for i in range(12):
        (dom / f"d{i}.txt").write_text(f"Document {i} of a small domain, a few words long.")
    exits_clearly(specialize.main, argv(run_copy, "--data.domains", f"small={dom}", "--domain", "small"), capsys,
                  "data.domains.small (train)", "fewer than one batch of 8", "add data or lower batch_size")


def test_domain_of_one_document(run_copy, capsys):
    from recipes import specialize

    (run_copy / "one.txt").write_text("One short document is not a domain.")
    exits_clearly(specialize.main, argv(run_copy, "--data.domains", f"one={run_copy / 'one.txt'}", "--domain", "one"),
                  # its one document lands in one split (by its name and text), the message names an empty one
                  capsys, "data.domains.one", "one.txt' has 1 document(s), too few to fill the train split",
                  "add documents")


def test_k_larger_than_the_number_of_windows():
    """k-means itself refuses; the cluster stage lowers an impossible k with a message instead (README:
    cluster.k_importance; tested in test_cluster_stage with k=2048 on the tiny data)."""
    from mlx_pn.clustering.kmeans import kmeans

    with pytest.raises(ValueError, match="k=10 is larger than the number of windows N=5; lower k"):
        kmeans(np.random.default_rng(0).random((5, 3), dtype=np.float32), 10)


def test_routed_method_without_its_pretraining(run_copy, capsys):
    from recipes import specialize

    exits_clearly(specialize.main, argv(run_copy, "--method", "slm-pn", "--domain", "legal"), capsys,
                  "method slm-pn routes windows by cluster", "has no clustering; run `mlx-pn cluster`")


# --- names, typos, types in the config ----------------------------------------------------------

CONFIG_CASES = {
    "unknown method": ({"method": "slm-pm"}, r"method: unknown method 'slm-pm'; did you mean 'slm-pn'"),
    "unknown preset": ({"model.preset": "tiyn"}, r"model.preset: unknown preset 'tiyn'; did you mean 'tiny'"),
    "unknown large preset": ({"large.preset": "huge"}, r"large.preset: unknown preset 'huge'"),
    "unknown select": ({"select": "best"}, r"select: unknown selection 'best'"),
    "unknown embedder": ({"cluster.embedder": "bert"}, r"cluster.embedder must be 'minilm' or 'static'"),
    "typo in an option": ({"pretrain.lerning_rate": "1"}, r"unknown option '--pretrain.lerning_rate'"),
    "int expected": ({"pretrain.steps": "ten"}, r"--pretrain.steps: 'pretrain.steps' expects int, got 'ten'"),
    "bool expected": ({"pretrain.compile": "maybe"}, r"'pretrain.compile' expects bool"),
    "zero steps": ({"pretrain.steps": "0"}, r"pretrain.steps must be >= 1, got 0"),
    "negative steps": ({"finetune.steps": "-1"}, r"finetune.steps must be >= 0, got -1"),
    "no fine-tuning budget": ({"finetune.steps": "0", "finetune.max_epochs": "0"}, r"set a budget"),
    "negative lr": ({"pretrain.lr": "-1"}, r"pretrain.lr must be a finite number > 0, got -1.0"),
    "infinite lr": ({"finetune.lr": "inf"}, r"finetune.lr must be a finite number > 0"),
    "int overflow": ({"pretrain.steps": "1e999"}, r"'pretrain.steps' expects int, got '1e999'"),
    "int not integral": ({"pretrain.steps": "1e-5"}, r"'pretrain.steps' expects int, got '1e-5'"),
    "domain source not a string": ({"data.domains": '{"law": 5}'}, r"data.domains: each entry must be NAME: SOURCES"),
    "vocabulary too small": ({"data.vocab_size": "100"}, r"data.vocab_size=100 is too small"),
    "bad domains syntax": ({"data.domains": "legal"}, r"'data.domains' expects dict, got 'legal'"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES), ids=list(CONFIG_CASES))
def test_bad_config_values(case):
    overrides, match = CONFIG_CASES[case]
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, overrides)


FILE_CASES = {
    "typo at top level": ("outt: x\n", r"cfg.yaml: unknown key 'outt'; did you mean 'out'"),
    "typo in a section": ("pretrain:\n  setps: 3\n", r"cfg.yaml: unknown key 'pretrain.setps'; did you mean 'pretrain.steps'"),
    "unknown section": ("pretraining:\n  steps: 3\n", r"cfg.yaml: unknown key 'pretraining'"),
    "section not a mapping": ("pretrain: 5\n", r"cfg.yaml: 'pretrain' must be a mapping, got 5"),
    "wrong type": ("pretrain:\n  steps: many\n", r"cfg.yaml: 'pretrain.steps' expects int, got 'many'"),
    "null": ("pretrain:\n  lr: null\n", r"cfg.yaml: 'pretrain.lr' may not be null"),
    "YAML syntax": ("pretrain: [1, 2\n", r"cfg.yaml: cannot parse"),
    "YAML list": ("- out\n- x\n", r"cfg.yaml: 'top level' must be a mapping"),
    "unknown method in file": ("method: mixture\n", r"method: unknown method 'mixture'"),
}


@pytest.mark.parametrize("case", list(FILE_CASES), ids=list(FILE_CASES))
def test_bad_config_files(case, tmp_path):
    text, match = FILE_CASES[case]
    (tmp_path / "cfg.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "cfg.yaml")


def test_config_errors_through_the_command_line(tmp_path, capsys):
    from recipes import pretrain

    exits_clearly(pretrain.main, ["--config", str(TINY), "--method", "slm-mixx"], capsys,
                  "unknown method 'slm-mixx'; did you mean 'slm-mix'")
    exits_clearly(pretrain.main, ["--config", str(TINY), "--model.preset", "tinyy"], capsys, "did you mean 'tiny'")
    exits_clearly(pretrain.main, ["--config", str(tmp_path / "none.yaml")], capsys, "none.yaml does not exist")
    exits_clearly(pretrain.main, ["--config", str(TINY), "--pretrain.step", "3"], capsys,
                  "unknown option '--pretrain.step'; did you mean '--pretrain.steps'?")


# --- tokenizer / model / export -----------------------------------------------------------------


def test_tokenizer_and_model_mismatch(pretrained, tmp_path):
    from mlx_pn.data.prepare import PreparedData
    from mlx_pn.export import ExportError, export_mlx_lm
    from mlx_pn.methods.finetune import check_vocab
    from mlx_pn.models.build import load_model

    cfg, data, _ = pretrained
    model = load_model(f"{cfg.out}/pretrain/final")
    fake = type("Tok", (), {"vocab_size": 700, "folder": tmp_path / "tok"})()
    with pytest.raises(ConfigError, match=r"vocab_size=1024 but the tokenizer .*tok/spm.model has 700 ids.*same "
                                          r"data.dir/data.vocab_size"):
        check_vocab(model, PreparedData(fake, data.corpora), "here")
    hf = tmp_path / "hf"
    shutil.copytree(data.tokenizer.hf_dir, hf)
    tj = json.loads((hf / "tokenizer.json").read_text())
    tj["model"]["vocab"] = dict(list(tj["model"]["vocab"].items())[:700])
    (hf / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ExportError, match=r"has 700 ids but the model's vocab_size is 1024; export with the tokenizer"):
        export_mlx_lm(model, hf, tmp_path / "x")


def test_tokenizer_of_another_vocab_size(pretrained, tmp_path):
    from mlx_pn.data.prepare import prepare_data

    cfg, data, _ = pretrained
    cfg2 = load_config(TINY, {"out": str(tmp_path), "data.dir": str(cfg.data_dir), "data.max_docs": "300",
                              "data.vocab_size": "2048"})
    with pytest.raises(DataError, match=r"tokenizer has 1024 ids but data.vocab_size=2048; delete .*tokenizer"):
        prepare_data(cfg2, log=lambda *a: None)


def test_damaged_tokenizer_model(tiny_run, tmp_path):
    from mlx_pn.data.tokenizer import Tokenizer

    cfg, data = tiny_run
    shutil.copytree(data.tokenizer.folder, tmp_path / "tok")
    (tmp_path / "tok" / "spm.model").write_bytes(b"\x00not a model")
    with pytest.raises(DataError, match=r"tok/spm.model is damaged and cannot be loaded .*delete .*rerun the data"):
        Tokenizer(tmp_path / "tok")


def test_export_directory_exists(pretrained, tmp_path, capsys):
    from recipes import export

    cfg, data, _ = pretrained
    (tmp_path / "dest").mkdir()
    exits_clearly(export.main, argv(cfg.out, "--model", f"{cfg.out}/pretrain/final", "--to", str(tmp_path / "dest")),
                  capsys, f"export directory {tmp_path / 'dest'} already exists; pass --force")


# --- disk space -----------------------------------------------------------------------------------


def test_not_enough_disk_for_a_shard(tiny_run, tmp_path, monkeypatch):
    import mlx_pn.io
    from mlx_pn.data.shards import build_shards
    from mlx_pn.data.sources import Document

    cfg, data = tiny_run
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(mlx_pn.io.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    docs = {"train": [Document("a", "some text " * 100)], "valid": [], "test": []}
    with pytest.raises(DataError, match=r"not enough disk space for the token shards of 'law' in .*shards: needs "
                                        r"about 1.\d MB, 0.0 MB free; free some space, or set data.dir"):
        build_shards("law", docs, data.tokenizer, tmp_path / "shards", "x.txt")
    assert not (tmp_path / "shards" / "law").exists()


def test_not_enough_disk_through_the_recipe(tmp_path, monkeypatch, capsys):
    import mlx_pn.io
    from recipes import prepare

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(mlx_pn.io.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    # the tokenizer trains (small), then the first shard does not fit
    exits_clearly(prepare.main, ["--corpus", "config"] + argv(tmp_path / "o", "--data.max_docs", "40"), capsys,
                  "not enough disk space for the token shards of 'generic'", "set data.dir")


@pytest.mark.parametrize("argv0, shown", [
    ("/home/u/mlx-pn/recipes/cluster.py", "python -m recipes.cluster"),  # a clone's python -m recipes.cluster
    ("mlx-pn cluster", "mlx-pn cluster"),  # the installed command (mlx_pn.recipes.main sets argv[0])
    ("/venv/lib/python3.11/site-packages/mlx_pn/recipes/cluster.py", "mlx-pn cluster"),  # python -m mlx_pn.recipes.X
    ("/home/u/my_script.py", "mlx-pn cluster"),  # mlx_pn imported by a user's own script
])
def test_hints_name_the_command_the_way_it_was_started(monkeypatch, argv0, shown):
    import sys

    from mlx_pn.commands import recipe_command

    monkeypatch.setattr(sys, "argv", [argv0])
    assert recipe_command("cluster") == shown


# --- issue 23: one-line errors ----------------------------------------------------------------------------------


def test_sigterm_while_a_command_starts_is_the_one_line_exit_143(tmp_path):
    """Before the config loads (imports, argparse) a SIGTERM killed the command silently (rc -15)."""
    import signal
    import subprocess
    import sys

    from conftest import REPO

    code = "import os, signal, time, mlx_pn.recipes; os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 143 and r.stderr.strip() == (
        "interrupted (SIGTERM) while starting; nothing was written; rerun the same command"), r.stderr
    # a real command, terminated at a few moments of its first second and a half: always 143, one line
    for delay in (0.15, 0.4, 0.8, 1.5):
        p = subprocess.Popen([sys.executable, "-m", "recipes.prepare", "--config", "tiny", "--out",
                              str(tmp_path / f"run{delay}")], cwd=REPO, stderr=subprocess.PIPE, text=True)
        import time

        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=120)[1]
        assert p.returncode == 143, (delay, p.returncode, err[-800:])
        # one line of ours, the last; a progress bar the command had already drawn may stand above it
        lines = err.strip().splitlines()
        assert "Traceback" not in err and lines[-1].startswith("interrupted (SIGTERM)"), (delay, err[-800:])
        assert sum("SIGTERM" in line for line in lines) == 1, (delay, err[-800:])


def test_mlx_pn_help_lists_the_preset_names(capsys):
    """`mlx-pn --help` (each command's --config help: tests/test_config.py)."""
    from mlx_pn.recipes import main

    main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("tiny", "quickstart", "cpu", "paper-slm", "compare-tiny"):
        assert name in out, name
