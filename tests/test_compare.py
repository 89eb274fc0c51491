"""recipes.compare: the grid at the tiny preset, its results files and plots, matched FLOPs, resumption."""

import json

import pytest

from mlx_pn.compare.grid import CompareConfig, grid_rows, row_config
from mlx_pn.compare.results import equal_quality
from mlx_pn.config import ConfigError
from mlx_pn.methods import load_config
from mlx_pn.costs import train_flops_per_token
from mlx_pn.models.build import model_args

from conftest import REPO

TINY = REPO / "recipes" / "configs" / "compare-tiny.yaml"


def _cfg(out, **ov):
    return load_config(TINY, {"out": str(out), **{k: str(v) for k, v in ov.items()}}, cls=CompareConfig)


def test_rows_and_matched_flops(tmp_path):
    cfg = _cfg(tmp_path, **{"grid.methods": "slm-d,slm-pn"})
    rows = grid_rows(cfg)
    assert [r.name for r in rows] == ["slm", "llm", "slm-d", "slm-pn", "slm-untied", "slm-shared-ffn",
                                      "slm-shared-attn-out", "slm-byte"]  # slm-d brings its parts
    assert rows[4].overrides == {"model.tie_word_embeddings": "false", "model.intermediate_size": "44"}
    V, L = 512, cfg.pretrain.seq_len
    f_slm = train_flops_per_token(model_args(cfg.model, V), L)
    for b in (1.0, 2.0):
        slm, llm = row_config(cfg, rows[0], b, V, 4), row_config(cfg, rows[1], b, V, 4)
        assert slm.pretrain.steps == round(b * cfg.pretrain.steps)
        f_llm = train_flops_per_token(model_args(llm.large, V, "large"), L)
        assert llm.pretrain.steps < slm.pretrain.steps
        assert abs(llm.pretrain.steps * f_llm / (slm.pretrain.steps * f_slm) - 1) < 0.25  # rounding of few steps
        assert row_config(cfg, rows[3], b, V, 4).pretrain.steps < slm.pretrain.steps  # the projection costs
    assert row_config(cfg, rows[4], 1.0, V, 4).out.endswith("b1/variant-slm-untied")
    byte = row_config(cfg, rows[-1], 1.0, V, 4)  # the byte front end costs more FLOPs per token: fewer steps
    assert byte.model.frontend == "byte" and byte.pretrain.steps < slm.pretrain.steps / 2
    with pytest.raises(ConfigError, match="unknown method 'slm-x'"):
        grid_rows(_cfg(tmp_path, **{"grid.methods": "slm,slm-x"}))
    bad = _cfg(tmp_path)
    bad.grid.variants = {"v": "model.share_fn=true"}
    with pytest.raises(ConfigError, match="grid.variants.v"):
        grid_rows(bad)


def test_equal_quality_picks_the_cheapest_budget_reaching_the_slm():
    e = lambda row, b, ppl, pre: {"row": row, "budget": b, "after": {"0": ppl}, "pretrain_flops": pre,  # noqa: E731
                                  "specialize_flops": {"0": 1.0}}
    rows = [e("slm", 1, 20.0, 10), e("slm", 2, 18.0, 20), e("pn", 1, 17.5, 10), e("pn", 2, 16.0, 20),
            e("mix", 1, 30.0, 10), e("mix", 2, 19.0, 20)]
    target, pick = equal_quality(rows, "0")
    assert target == 18.0 and pick["slm"]["budget"] == 2 and pick["pn"]["budget"] == 1 and "mix" not in pick


@pytest.mark.slow
def test_tiny_grid_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    """Both budgets x both domain sizes on one domain, every method but slm-mix/slm-hn (tests/test_methods.py
    covers them; the grid treats them like slm-pn) and the variant row; a second run recomputes nothing."""
    from recipes import compare as recipe

    argv = ["--config", str(TINY), "--out", str(tmp_path), "--grid.domains", "legal", "--grid.methods",
            "slm,slm-nopt,llm,slm-d,slm-is,slm-pn", "--grid.variants", "{}"]
    recipe.main(argv)
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["row"], r["budget"]) for r in res["rows"]}
    methods = ["slm", "llm", "slm-d", "slm-is", "slm-pn"]
    assert rows == {(m, b) for m in methods for b in (1.0, 2.0)} | {("slm-nopt", None)}
    assert len(res["cells"]) == len(rows) * 2  # one domain, two sizes
    for r in res["rows"]:
        assert set(r["after"]) == {"2048", "0"} and all(v > 1 for v in r["after"].values())
        assert (r["pretrain_flops"] > 0) == (r["method"] not in ("slm-is", "slm-nopt"))
    by = {(r["row"], r["budget"]): r for r in res["rows"]}
    assert by[("slm", 2.0)]["pretrain_flops"] == pytest.approx(2 * by[("slm", 1.0)]["pretrain_flops"])
    assert by[("slm-d", 1.0)]["pretrain_flops"] == pytest.approx(
        by[("slm", 1.0)]["pretrain_flops"] + by[("llm", 1.0)]["pretrain_flops"])
    for c in res["cells"]:
        assert c["specialize_flops"] > 0 and c["config"]["method"] == c["method"] and "seed" in c
    md = (tmp_path / "results.md").read_text()
    assert "| slm-pn | 2 |" in md and "Total cost at equal quality" in md
    for png in ("macro_ppl_vs_pretrain_cost.png", "total_cost_vs_domains.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"

    import mlx_pn.train.loop as loop

    def no_training(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(loop, "train", no_training)
    recipe.main(argv)
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["cells"] == res["cells"]
    capsys.readouterr()


def test_intervals_and_paired_verdicts():
    """Student-t intervals over seeds; the verdict follows the paired interval, not the means."""
    import math

    from mlx_pn.compare.results import aggregate, interval, paired_differences, t_quantile

    assert t_quantile(2) == 4.303 and abs(t_quantile(60) - 2.000) < 0.002 and abs(t_quantile(200) - 1.972) < 0.002
    m, h = interval([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert interval([5.0]) == (5.0, None)

    def run(row, b, seed, ppl):
        return {"row": row, "method": row, "budget": b, "seed": seed, "pretrain_steps": 1, "overrides": {},
                "pretrain_flops": 1.0, "pretrain_wall_s": 1.0, "generic_valid_ppl": ppl, "params": 10,
                "before": {"0": ppl * 2}, "after": {"0": ppl}, "bpb_after": {}, "specialize_flops": {"0": 1.0},
                "specialize_wall_s": {"0": 1.0}}

    slm = {0: 100.0, 1: 140.0, 2: 120.0}  # a large seed spread...
    runs = [run("slm", 1.0, s, p) for s, p in slm.items()]
    runs += [run("a", 1.0, s, p * 0.95) for s, p in slm.items()]  # ...but 5% better at every seed: beats it
    runs += [run("b", 1.0, s, p * f) for (s, p), f in zip(slm.items(), (0.9, 1.1, 1.0))]  # better on average only
    runs += [run("nopt", None, s, 200.0) for s in slm]
    rows = {(e["row"], e["budget"]): e for e in aggregate(runs)}
    assert rows[("slm", 1.0)]["after"]["0"] == 120.0 and rows[("slm", 1.0)]["after_n"]["0"] == 3
    assert rows[("slm", 1.0)]["after_ci"]["0"] == pytest.approx(interval(list(slm.values()))[1])
    # the unpaired intervals of slm and a overlap, the paired one does not
    assert rows[("a", 1.0)]["after"]["0"] + rows[("a", 1.0)]["after_ci"]["0"] > 120.0
    by = {d["row"]: d for d in paired_differences(runs, [0])}
    assert by["a"]["verdict"] == "beats the slm" and by["a"]["hi"] < 0
    assert by["a"]["mean_nll_diff"] == pytest.approx(math.log(0.95))
    assert by["b"]["verdict"] == "no difference" and by["b"]["lo"] < 0 < by["b"]["hi"]
    assert by["nopt"]["verdict"] == "worse than the slm" and by["nopt"]["vs_budget"] == 1.0
    one = paired_differences([r for r in runs if r["seed"] == 0], [0])
    assert {d["verdict"] for d in one} == {"n=1: no interval"}


@pytest.mark.slow
def test_seeds_and_lr_sweep_on_a_tiny_grid(tmp_path, capsys):
    """Two seeds, each in its own folder; the sweep picks the multiplier of lowest generic validation loss and
    every budget and seed trains with it (slm-nopt, which has no generic pretraining, takes the slm's)."""
    from recipes import compare as recipe

    argv = ["--config", str(TINY), "--out", str(tmp_path), "--grid.domains", "legal", "--grid.methods",
            "slm,slm-nopt", "--grid.variants", "{}", "--grid.seeds", "0,1", "--grid.lr_sweep", "0.25,4",
            "--grid.budgets", "1", "--grid.domain_tokens", "0", "--pretrain.steps", "12"]
    recipe.main(argv)
    res = json.loads((tmp_path / "results.json").read_text())
    sw = res["lr_sweep"]["slm"]
    assert set(res["lr_sweep"]) == {"slm"} and sw["multipliers"] == [0.25, 4.0] and None not in sw["valid_nll"]
    assert sw["valid_nll"][0] != sw["valid_nll"][1]
    best = sw["multipliers"][sw["valid_nll"].index(min(sw["valid_nll"]))]
    assert sw["winner"] == best
    base, base_min = res["config"]["pretrain"]["lr"], res["config"]["pretrain"]["min_lr"]
    for m in (0.25, 4):
        tc = json.loads((tmp_path / "sweep" / f"x{m:g}" / "s0" / "b1" / "pretrain" / "train_config.json").read_text())
        assert tc["lr"] == pytest.approx(base * m) and tc["min_lr"] == pytest.approx(base_min * m)
    assert {r["seed"] for r in res["runs"]} == {0, 1}
    for r in res["runs"]:
        assert r["pretrain_lr"] == pytest.approx(base * best)
    for s in (0, 1):
        assert (tmp_path / f"s{s}" / "b1" / "pretrain" / "summary.json").exists()
        assert (tmp_path / f"s{s}" / "nopt" / "specialize-slm-nopt" / "legal" / "results.json").exists()
        cfg_s = json.loads((tmp_path / f"s{s}" / "b1" / "specialize" / "legal" / "results.json").read_text())["config"]
        assert cfg_s["pretrain"]["seed"] == cfg_s["finetune"]["seed"] == s
    runs = {(r["row"], r["seed"]): r for r in res["runs"]}
    assert runs[("slm", 0)]["after"]["0"] != runs[("slm", 1)]["after"]["0"]  # the replicates differ
    slm = next(e for e in res["rows"] if e["row"] == "slm")
    assert slm["seeds"] == [0, 1] and slm["after_n"]["0"] == 2 and slm["after_ci"]["0"] > 0
    assert slm["after"]["0"] == pytest.approx((runs[("slm", 0)]["after"]["0"] + runs[("slm", 1)]["after"]["0"]) / 2)
    (d,) = res["paired"]
    assert d["row"] == "slm-nopt" and d["n"] == 2 and d["lo"] < d["mean_nll_diff"] < d["hi"]
    md = (tmp_path / "results.md").read_text()
    assert "±" in md and "paired by seed" in md and "Learning rates (grid.lr_sweep)" in md
    recipe.main(argv + ["--report-only"])
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == res["rows"]
    capsys.readouterr()
