"""The layout's promises: no import circles, models/ imports nothing above it, method names live in
mlx_pn/methods/ only, and a method added as one registry entry runs through the recipes and the grid."""

import ast
import json
import re
from pathlib import Path

import pytest

from conftest import REPO, TINY

PKG = REPO / "mlx_pn"


def _module_name(f: Path) -> str:
    name = ".".join(f.relative_to(REPO).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def import_graph() -> dict[str, set[str]]:
    """module -> the mlx_pn modules it imports (at any depth of the file: lazy imports count too)."""
    mods = {_module_name(f): f for f in PKG.rglob("*.py")}
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # a package importing its own submodules (re-exports) is not an arrow back
                if t and t != m and not t.startswith(m + ".") and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_circle_finder_finds_a_planted_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]


def test_models_import_nothing_above_them():
    above = ("mlx_pn.train", "mlx_pn.data", "mlx_pn.methods", "mlx_pn.compare", "mlx_pn.clustering", "mlx_pn.corpus")
    bad = [f"{m} -> {t}" for m, ts in import_graph().items() if m.startswith("mlx_pn.models")
           for t in ts if t.startswith(above)]
    assert bad == []


def test_config_imports_no_models():
    assert not {t for t in import_graph()["mlx_pn.config"] if t.startswith("mlx_pn.models")}


def test_method_names_only_in_the_methods_package():
    """A quoted method name (other than the base slm and llm) outside mlx_pn/methods/ is a dispatch on it."""
    pattern = re.compile(r"""["'](slm-pn|slm-mix|slm-hn|slm-is|slm-d|slm-nopt)["']""")
    hits = [f"{f.relative_to(REPO)}:{n}" for f in PKG.rglob("*.py") if "methods" not in f.parts
            for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_stages_module_is_gone():
    assert not (PKG / "stages.py").exists() and not (PKG / "compare.py").exists()


# --- a new method is one registry entry ---------------------------------------------------------------


@pytest.fixture()
def toy_method(monkeypatch):
    """A method no file knows: the slm's pretraining and fine-tuning under another name, registered in a test."""
    from mlx_pn.methods import METHODS, slm
    from mlx_pn.methods.method import Method

    seen = []

    def pretrain(cfg, data, resume=True, log=print, expert=None):
        seen.append(("pretrain", cfg.method))
        return slm.SLM.pretrain(cfg, data, resume, log)

    def specialize(cfg, data, domain, resume=True, log=print, domain_tokens=0):
        seen.append(("specialize", cfg.method, domain))
        return slm.specialize_pretrained(cfg, data, domain, resume, log, domain_tokens)

    monkeypatch.setitem(METHODS, "toy", Method("toy", pretrain=pretrain, specialize=specialize))
    return seen


@pytest.mark.slow
def test_a_registered_method_runs_through_the_recipes_and_the_grid(toy_method, tiny_run, tmp_path, capsys):
    from recipes import compare, pretrain, specialize

    cfg, _ = tiny_run
    common = ["--config", str(TINY), "--data.dir", str(cfg.data_dir), "--data.max_docs", "300",
              "--pretrain.steps", "6", "--pretrain.eval_every", "3", "--finetune.steps", "4",
              "--finetune.eval_every", "2", "--data.test_windows", "4"]
    out = tmp_path / "run"
    pretrain.main(common + ["--out", str(out), "--method", "toy"])
    assert (out / "pretrain-toy" / "final" / "model.safetensors").exists()
    assert json.loads((out / "pretrain-toy" / "summary.json").read_text())["cost"]["flops"] > 0
    specialize.main(common + ["--out", str(out), "--method", "toy", "--domain", "legal"])
    r = json.loads((out / "specialize-toy" / "legal" / "results.json").read_text())
    assert r["method"] == "toy" and r["after"]["legal"]["nll"] < r["before"]["legal"]["nll"]

    grid = tmp_path / "grid"
    compare.main(common + ["--out", str(grid), "--grid.methods", "toy", "--grid.variants", "{}",
                           "--grid.budgets", "1", "--grid.domains", "legal", "--grid.domain_tokens", "0",
                           "--grid.seeds", "0"])
    res = json.loads((grid / "results.json").read_text())
    assert [e["row"] for e in res["rows"]] == ["toy"] and res["rows"][0]["after"]["0"] > 0
    assert [c["method"] for c in res["cells"]] == ["toy"]
    assert ("pretrain", "toy") in toy_method and ("specialize", "toy", "legal") in toy_method
    assert "| toy | 1 |" in (grid / "results.md").read_text()


def test_an_unknown_method_is_named_with_the_registry(tiny_run):
    from mlx_pn.config import ConfigError
    from mlx_pn.methods import load_config

    with pytest.raises(ConfigError, match=r"unknown method 'toy'.*implemented: slm, llm"):
        load_config(TINY, {"method": "toy"})
