"""mlx-pn plan: a grid's results.json -> fits / C_total(N) / expected macro perplexity per method and a
recommendation; on hand-made grids whose answers are known, on the packaged grid, and from the command line."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from mlx_pn.compare.grid_file import DEFAULT_GRID, load_grid, pack
from mlx_pn.compare.plan import Budgets, bracket, plan
from mlx_pn.compare.plan_report import plan_text
from mlx_pn.config import ConfigError


def row(name, budget, pre, ppl, ci, spec, params=1000, size="0", **extra):
    return {"row": name, "method": name, "budget": budget, "params": params, "pretrain_flops": pre,
            "after": {size: ppl}, "after_ci": {size: ci}, "after_n": {size: 3}, "specialize_flops": {size: spec},
            **extra}


def write_grid(tmp_path, rows, tokens=None, name="results.json"):
    """A results.json as recipes.compare writes it (the fields the planner reads): rows, sizes, cells."""
    tokens = tokens or {"0": 100_000}
    sizes = sorted({s for r in rows for s in r["after"]}, key=int)
    cells = [{"size": int(s), "domain_tokens": tokens[s]} for s in sizes]
    p = tmp_path / name
    p.write_text(json.dumps({"domains": ["a", "b"], "sizes": [int(s) for s in sizes], "seeds": [0, 1, 2],
                             "rows": rows, "cells": cells, "config": {}}))
    return p


def plan_of(tmp_path, rows, tokens=None, **budgets):
    b = Budgets(**{"n_domains": 1, "pretrain_flops": 1e12, "specialize_flops": 1e11} | budgets)
    grid = load_grid(write_grid(tmp_path, rows, tokens))
    return grid, plan(grid, b)


SLM = [row("slm", 1, 1e12, 100.0, 2.0, 1e11), row("slm", 4, 4e12, 80.0, 4.0, 1e11)]


def test_bracket_reads_measured_points_and_weights_log_linearly():
    xs = [1e12, 4e12]
    assert bracket(xs, 1.05e12) == ([(0, 1.0)], "at")  # up to 10% above: the measurement itself
    assert bracket(xs, 0.95e12)[1] == "below"  # never a measurement that costs more than the budget
    assert bracket(xs, 3.9e12)[1] == "between" and bracket(xs, 4.3e12)[1] == "at"
    (i, wi), (j, wj) = bracket(xs, 2e12)[0]
    assert (i, j) == (0, 1) and wi == pytest.approx(0.5) and wj == pytest.approx(0.5)  # log-midpoint of 1 and 4
    assert bracket(xs, 1e11) == ([(0, 1.0)], "below") and bracket(xs, 1e13) == ([(1, 1.0)], "above")


def test_interpolated_between_measured_budgets(tmp_path):
    _, p = plan_of(tmp_path, SLM, pretrain_flops=2e12)
    e = p["methods"]["slm"]
    assert e["fits"] and not e["outside"]
    assert e["ppl"] == pytest.approx(90.0) and e["ci"] == pytest.approx(3.0)
    assert (e["lo"], e["hi"]) == (pytest.approx(87.0), pytest.approx(93.0))
    assert e["c_pretrain"] == 2e12 and e["c_total"] == pytest.approx(2e12 + 1e11)
    assert "interpolated between the measured pretraining budgets 1e+12 and 4e+12" in e["notes"][0]


def test_beyond_the_largest_budget_is_said_not_extrapolated(tmp_path):
    grid, p = plan_of(tmp_path, SLM, pretrain_flops=1e13, n_domains=3)
    e = p["methods"]["slm"]
    assert e["fits"] and e["outside"] and e["ppl"] == 80.0  # the largest measurement, not a trend beyond it
    assert e["c_pretrain"] == 4e12 and e["c_total"] == pytest.approx(4e12 + 3 * 1e11)
    text = plan_text(grid, p)
    assert "outside the measured range (largest measured 4e+12)" in text
    assert "its figure lies outside the measured range" in p["recommendation"]["reason"]


def test_below_the_smallest_budget_does_not_fit(tmp_path):
    _, p = plan_of(tmp_path, SLM, pretrain_flops=3e11)
    e = p["methods"]["slm"]
    assert not e["fits"] and e["ppl"] is None and "below the measured range" in e["why"]
    assert p["recommendation"]["method"] is None


def test_fits_or_not_by_inference_cap_and_specialization_budget(tmp_path):
    rows = SLM + [row("llm", 1, 1e12, 70.0, 2.0, 3e11, params=5000),
                  row("slm-pn", 1, 1e12, 95.0, 2.0, 1e11, params=1000)]
    _, p = plan_of(tmp_path, rows, max_params=2000, specialize_flops=5e11)
    assert "deploys 5,000 parameters > your inference cap 2,000" in p["methods"]["llm"]["why"]
    _, p = plan_of(tmp_path, rows, specialize_flops=2e11)
    llm = p["methods"]["llm"]
    assert not llm["fits"]
    assert "specialization costs 3e+11 FLOPs per domain > your specialization budget 2e+11" in llm["why"]
    _, p = plan_of(tmp_path, rows, specialize_flops=5e11)  # no cap, enough specialization: the llm wins
    assert p["methods"]["llm"]["fits"] and p["recommendation"]["method"] == "llm"
    assert p["methods"]["slm"]["verdict"] == "worse (intervals apart)"


def test_no_difference_when_intervals_overlap(tmp_path):
    rows = [row("slm", 1, 1e12, 100.0, 2.0, 1e11), row("slm-pn", 1, 1e12, 97.0, 9.0, 1e11),
            row("slm-mix", 1, 1e12, 120.0, 3.0, 1e11)]
    _, p = plan_of(tmp_path, rows)
    m, rec = p["methods"], p["recommendation"]
    assert m["slm-pn"]["verdict"] == "best expected perplexity"
    assert m["slm"]["verdict"] == "no difference (intervals overlap)"
    assert m["slm-mix"]["verdict"] == "worse (intervals apart)"
    # the same cost: the narrower interval is recommended, and the reason says there is no difference
    assert set(rec["tied"]) == {"slm", "slm-pn"}
    assert rec["method"] == "slm" and "no difference from the best expected perplexity (slm-pn" in rec["reason"]
    assert "the lowest upper bound, 100.00 [98.00, 102.00]" in rec["reason"]
    # apart: the best is recommended for its perplexity
    rows[1] = row("slm-pn", 1, 1e12, 90.0, 2.0, 1e11)
    _, p = plan_of(tmp_path, rows)
    assert p["recommendation"]["method"] == "slm-pn" and "worse beyond its interval" in p["recommendation"]["reason"]


def test_among_equals_the_cheaper_total_is_recommended(tmp_path):
    rows = [row("slm", 1, 1e12, 100.0, 5.0, 1e11), row("slm-d", 1, 1e12, 99.0, 5.0, 4e11)]
    _, p = plan_of(tmp_path, rows, specialize_flops=5e11, n_domains=10)
    rec = p["recommendation"]
    assert rec["method"] == "slm" and "cheaper for N=10: C_total 2e+12 vs 5e+12" in rec["reason"]


def test_a_wide_interval_does_not_win_by_overlapping(tmp_path):
    """A cheap method whose interval spans everything (one seed of three stalled) is "no difference" from the best,
    but the one recommended is the one whose interval reaches least far up."""
    rows = [row("slm-hn", 1, 5e11, 175.0, 228.0, 1e11), row("slm-is", 1, 0.0, 75.0, 3.0, 9e11),
            row("slm", 1, 5e11, 135.0, 4.0, 1e11)]
    _, p = plan_of(tmp_path, rows, pretrain_flops=5e11, specialize_flops=9e11)
    m, rec = p["methods"], p["recommendation"]
    assert m["slm-hn"]["verdict"] == "no difference (intervals overlap)" and m["slm"]["verdict"].startswith("worse")
    assert rec["method"] == "slm-is" and "no difference from slm-hn" in rec["reason"]
    text = plan_text(load_grid(tmp_path / "results.json"), p)
    assert "slm-is costs more in total already for one domain (9e+11 vs 6e+11 FLOPs)" in text


def test_slm_is_pays_per_domain_and_the_crossover(tmp_path):
    rows = SLM[:1] + [row("slm-is", 1, 0.0, 60.0, 3.0, 5e11), row("slm-is", 4, 0.0, 50.0, 3.0, 2e12)]
    grid, p = plan_of(tmp_path, rows, specialize_flops=1e11)
    assert not p["methods"]["slm-is"]["fits"] and "pays its pretraining per domain" in p["methods"]["slm-is"]["why"]
    grid, p = plan_of(tmp_path, rows, specialize_flops=5e11, n_domains=2)
    e = p["methods"]["slm-is"]
    assert e["fits"] and e["c_pretrain"] == 0.0 and e["c_total"] == pytest.approx(2 * 5e11) and e["ppl"] == 60.0
    assert p["recommendation"]["method"] == "slm-is"
    (c,) = p["crossovers"]  # N* = C_pretrain(slm) / (C_spec(is) - C_spec(slm)) = 1e12 / 4e11
    assert c == {"per_domain": "slm-is", "shared": "slm", "n": pytest.approx(2.5)}
    assert "slm-is is cheaper in total below N = 2.5 domains and stops paying beyond it" in plan_text(grid, p)
    # a per-domain budget between its measurements: interpolated on its own (specialization) axis
    _, p = plan_of(tmp_path, rows, specialize_flops=1e12)
    assert p["methods"]["slm-is"]["ppl"] == pytest.approx(55.0)


def test_interpolated_between_data_sizes_and_outside_them(tmp_path):
    rows = [row("slm", 1, 1e12, 100.0, 2.0, 1e11, size="100000") | {
        "after": {"100000": 100.0, "1000000": 60.0}, "after_ci": {"100000": 2.0, "1000000": 4.0},
        "specialize_flops": {"100000": 1e11, "1000000": 1e11}}]
    tokens = {"100000": 100_000, "1000000": 1_000_000}
    _, p = plan_of(tmp_path, rows, tokens, domain_tokens=10 ** 5.5)
    e = p["methods"]["slm"]
    assert e["ppl"] == pytest.approx(80.0) and e["ci"] == pytest.approx(3.0) and not e["outside"]
    assert any("interpolated between the measured data sizes 100,000 and 1,000,000" in n for n in e["notes"])
    _, p = plan_of(tmp_path, rows, tokens, domain_tokens=1e7)
    e = p["methods"]["slm"]
    assert e["outside"] and e["ppl"] == 60.0 and any("outside the measured range" in n for n in e["notes"])
    _, p = plan_of(tmp_path, rows, tokens)  # default: the largest measured size
    assert p["methods"]["slm"]["ppl"] == 60.0 and not p["methods"]["slm"]["outside"]


CAP = {"label": "0:cap200", "size": 0, "cap": 200, "select": ""}
EARLY = {"label": "0:early", "size": 0, "cap": 0, "select": ""}
BEST_LOSS = {"label": "0:cap200-best-loss", "size": 0, "cap": 200, "select": "best-loss"}
HISTOGRAM = {"label": "0:cap200-histogram", "size": 0, "cap": 200, "select": "histogram"}


def srow(name, pre, numbers, params=1000):
    """A row of a grid with settings (mlx_pn.compare.grid.collect): numbers keyed by setting label;
    numbers: {label: (ppl, ci, specialization FLOPs per domain)}."""
    return {"row": name, "method": name, "budget": 1, "params": params, "pretrain_flops": pre,
            "after": {k: v[0] for k, v in numbers.items()}, "after_ci": {k: v[1] for k, v in numbers.items()},
            "after_n": {k: 5 for k in numbers}, "specialize_flops": {k: v[2] for k, v in numbers.items()}}


def settings_grid(tmp_path, rows, settings, cells=None):
    cells = cells if cells is not None else [{"size": s["label"], "domain_tokens": 50_000} for s in settings]
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"domains": ["a", "b"], "settings": settings, "sizes": [s["label"] for s in settings],
                             "seeds": [0, 1, 2, 3, 4], "rows": rows, "cells": cells, "config": {}}))
    return load_grid(p)


def splan(grid, spec, n=1, pre=1e12):
    return plan(grid, Budgets(n_domains=n, pretrain_flops=pre, specialize_flops=spec))


def test_the_settings_give_the_specialization_budget_axis(tmp_path):
    """A grid's plain settings are its specialization budgets, each at its measured cost: the user's budget takes
    the best setting that fits, never one that costs more."""
    rows = [srow("slm", 1e12, {"0:cap200": (30.0, 1.0, 1e11), "0:early": (20.0, 1.0, 6e11)}),
            srow("llm", 1e12, {"0:cap200": (29.0, 1.0, 3e11), "0:early": (19.0, 1.0, 2e12)}, params=5000)]
    grid = settings_grid(tmp_path, rows, [CAP, EARLY])
    assert grid["axis"] == "fine-tuning" and grid["sizes"] == ["0"] and grid["tokens_per_size"] == {"0": 50_000}
    p = splan(grid, 2e11)  # the 200-step cap fits, early stopping does not
    slm = p["methods"]["slm"]
    assert slm["fits"] and slm["spec_setting"] == "<= 200 steps" and slm["ppl"] == 30.0
    assert slm["c_specialize"] == 1e11 and slm["c_total"] == pytest.approx(1e12 + 1e11)
    (alt,) = slm["alternatives"]
    assert alt["spec_setting"] == "early stopping" and not alt["fits"] and alt["ppl"] == 20.0
    assert "specialization costs 6e+11 FLOPs per domain > your specialization budget 2e+11" in alt["why"]
    assert not p["methods"]["llm"]["fits"] and p["recommendation"]["method"] == "slm"
    assert "slm [fine-tuning = <= 200 steps]: measured at pretraining" in plan_text(grid, p)
    p = splan(grid, 5.99e11)  # just under early stopping's cost: still the cap
    assert p["methods"]["slm"]["spec_setting"] == "<= 200 steps"
    p = splan(grid, 6e11)  # early stopping fits the slm (better), the llm only its cap
    assert p["methods"]["slm"]["spec_setting"] == "early stopping" and p["methods"]["slm"]["ppl"] == 20.0
    assert p["methods"]["llm"]["spec_setting"] == "<= 200 steps" and p["methods"]["llm"]["ppl"] == 29.0
    assert p["recommendation"]["method"] == "slm"
    p = splan(grid, 3e12)  # both settings fit both: each its better one
    assert p["methods"]["llm"]["spec_setting"] == "early stopping" and p["methods"]["llm"]["ppl"] == 19.0
    rec = p["recommendation"]  # 19 +- 1 and 20 +- 1 overlap: the cheaper total, within 5% of the worst case
    assert rec["method"] == "slm" and "no difference from llm" in rec["reason"] and "cheaper for N=1" in rec["reason"]
    for e in splan(grid, 4e11)["methods"].values():
        assert not e["fits"] or e["c_specialize"] <= 4e11


def test_a_selection_rule_replaces_the_own_only_beyond_the_noise(tmp_path):
    own = (42.0, 0.5, 1e11)
    rows = [srow("slm-mix", 1e12, {"0:cap200": own, "0:early": (21.0, 0.3, 9e11),
                                   "0:cap200-best-loss": (40.0, 0.7, 1.1e11), "0:cap200-histogram": (41.8, 1.0, 1e11)}),
            srow("slm", 1e12, {"0:cap200": (26.0, 0.4, 1e11), "0:early": (19.0, 0.4, 9e11)})]
    grid = settings_grid(tmp_path, rows, [CAP, EARLY, BEST_LOSS, HISTOGRAM])
    e = splan(grid, 2e11)["methods"]["slm-mix"]  # best-loss: [39.3, 40.7] lies below the own [41.5, 42.5]
    assert e["select"] == "best-loss" and e["ppl"] == 40.0 and e["c_specialize"] == 1.1e11
    assert e["own_rule"]["ppl"] == 42.0 and e["spec_setting"] == "<= 200 steps"
    assert any("selection rule best-loss beats the row's own rule beyond the noise" in n for n in e["notes"])
    grid_text = plan_text(grid, splan(grid, 2e11))
    assert "slm-mix [fine-tuning = <= 200 steps, selection rule best-loss]" in grid_text
    e = splan(grid, 1.05e11)["methods"]["slm-mix"]  # best-loss costs more than the budget; histogram overlaps
    assert e["select"] is None and e["ppl"] == 42.0
    assert any("none beats the row's own rule beyond the noise" in n for n in e["notes"])
    assert splan(grid, 2e11)["methods"]["slm"].get("select") is None  # a row without rules: nothing to say
    # a lower mean inside the noise, or one seed (no interval), keeps the row's own rule
    for rule in ((41.6, 0.5, 1e11), (30.0, None, 1e11)):
        rows[0]["after"]["0:cap200-best-loss"], rows[0]["after_ci"]["0:cap200-best-loss"], _ = rule
        grid = settings_grid(tmp_path, rows, [CAP, EARLY, BEST_LOSS, HISTOGRAM])
        e = splan(grid, 2e11)["methods"]["slm-mix"]
        assert e["select"] is None and e["ppl"] == 42.0, rule
    # with early stopping affordable, the better setting wins whatever the cap's rules
    assert splan(grid, 1e12)["methods"]["slm-mix"]["spec_setting"] == "early stopping"


def test_settings_cap_hits_and_packing(tmp_path):
    """Cells are counted per setting label (the cap stopped them, or early stopping did); a packed grid keeps
    the settings and plans as the full one."""
    cells = [{"row": "slm", "budget": 1, "size": "0:cap200", "domain_tokens": 50_000, "stopped_by": "steps",
              "finetune_steps": 200, "best_step": 200},
             {"row": "slm", "budget": 1, "size": "0:early", "domain_tokens": 50_000, "stopped_by": "early stopping",
              "finetune_steps": 700, "best_step": 500}]
    rows = [srow("slm", 1e12, {"0:cap200": (30.0, 1.0, 1e11), "0:early": (20.0, 1.0, 6e11)})]
    grid = settings_grid(tmp_path, rows, [CAP, EARLY], cells)
    assert [r["cap_hit"] for r in grid["rows"]] == [{"0": [1, 1]}, {"0": [0, 1]}]
    assert splan(grid, 2e11)["methods"]["slm"]["cap_hit"] == [1, 1]
    packed = pack(json.loads((tmp_path / "results.json").read_text()), "x")
    assert packed["settings"] == [CAP, EARLY] and "cells" not in packed
    (tmp_path / "packed.json").write_text(json.dumps(packed))
    again = load_grid(tmp_path / "packed.json")
    assert again["rows"] == grid["rows"] and again["tokens_per_size"] == grid["tokens_per_size"]


def test_settings_of_sizes_only_have_no_axis(tmp_path):
    """A grid whose settings are data sizes alone (no caps or rules: labels "0", "2048") keeps its sizes."""
    rows = [srow("slm", 1e12, {"2048": (60.0, 1.0, 1e11), "0": (40.0, 1.0, 1e11)})]
    cells = [{"size": "2048", "domain_tokens": 2048}, {"size": "0", "domain_tokens": 300_000}]
    grid = settings_grid(tmp_path, rows, [{"label": "0", "size": 0, "cap": None, "select": ""},
                                          {"label": "2048", "size": 2048, "cap": None, "select": ""}], cells)
    assert grid["axis"] is None and grid["sizes"] == ["0", "2048"]
    assert grid["tokens_per_size"] == {"0": 300_000, "2048": 2048}
    p = plan(grid, Budgets(n_domains=1, pretrain_flops=1e12, specialize_flops=1e11, domain_tokens=2048))
    assert p["methods"]["slm"]["ppl"] == 60.0 and p["methods"]["slm"]["spec_setting"] is None


def test_an_old_grid_without_settings_still_plans():
    """docs/compare-cpu (numbers keyed by data size, no settings): one fine-tuning setting, no axis."""
    path = REPO / "docs" / "compare-cpu" / "results.json"
    grid, docs = load_grid(path), json.loads(path.read_text())
    assert grid["axis"] is None and grid["sizes"] == ["0"]
    slm = max((r for r in docs["rows"] if r["row"] == "slm"), key=lambda r: r["budget"])
    e = plan(grid, Budgets(n_domains=1, pretrain_flops=slm["pretrain_flops"],
                           specialize_flops=slm["specialize_flops"]["0"]))["methods"]["slm"]
    assert e["fits"] and e["spec_setting"] is None and e["ppl"] == pytest.approx(slm["after"]["0"])


def test_one_seed_has_no_interval_and_is_not_told_apart(tmp_path):
    rows = [row("slm", 1, 1e12, 100.0, None, 1e11), row("slm-pn", 1, 1e12, 90.0, 2.0, 1e11)]
    grid, p = plan_of(tmp_path, rows)
    assert p["methods"]["slm"]["verdict"] == "no difference (one seed: no interval)"
    assert "100.00 (n=1)" in plan_text(grid, p)


@pytest.mark.parametrize("content, field", [
    (None, "no such file"), ("{not json", "not readable JSON"), ({"rows": []}, "rows: missing or empty"),
    ({"rows": [{"row": "slm", "after": {}}]}, "rows[0].pretrain_flops: missing"),
    ({"rows": [{"row": "slm", "after": {"0": 1}, "pretrain_flops": 1, "specialize_flops": {}}], "sizes": [0]},
     "cells: no cell says how many tokens"),
    ({"rows": [{"row": "slm", "after": {"0": "89"}, "pretrain_flops": 1, "specialize_flops": {}}]},
     "rows[0].after.0: '89' is not a number > 0"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": -1, "specialize_flops": {}}]},
     "rows[0].pretrain_flops: -1 is not a FLOP count >= 0"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": 1, "specialize_flops": {"0": 0}}]},
     "rows[0].specialize_flops.0: 0 is not a number > 0"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": 1, "specialize_flops": {}, "params": 2.5}]},
     "rows[0].params: 2.5 is not a parameter count"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": 1, "specialize_flops": {}}] * 2},
     "rows: row 'slm' appears twice at budget None and the file has no `settings`"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": 1, "specialize_flops": {}}],
      "settings": [{"label": "0", "size": "all", "cap": 0, "select": ""}]}, "settings[0].size:"),
    ({"rows": [{"row": "slm", "after": {"0": 89}, "pretrain_flops": 1, "specialize_flops": {}}],
      "settings": [{"label": "0:best-loss", "size": 0, "cap": 0, "select": "best-loss"}]},
     "settings: no setting with the rows' own selection rule"),
])
def test_bad_grid_files_name_the_file_field_and_fix(tmp_path, content, field):
    p = tmp_path / "results.json"
    if content is not None:
        p.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError) as e:
        load_grid(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and "--grid" in msg and "\n" not in msg


def test_the_packaged_grid_is_the_docs_grid_packed():
    """The default grid ships with the package; it is the docs grid it names, packed (tools/pack_grid.py)."""
    packaged = json.loads(DEFAULT_GRID.read_text())
    source = REPO / packaged["source"]
    assert pack(json.loads(source.read_text()), packaged["source"]) == json.loads(json.dumps(packaged))


def test_the_packaged_grid_answers_as_measured():
    """At the grid's pretraining budget, a specialization budget of the slm's 200-step cost gives every shared
    method its 200-step figure (early stopping costs more), one of the largest early-stopping cost gives each its
    early-stopping figure: the docs grid's results.json rows, never a setting that costs more than the budget."""
    grid = load_grid()
    docs = json.loads((REPO / json.loads(DEFAULT_GRID.read_text())["source"]).read_text())
    by = {r["row"]: r for r in docs["rows"]}
    pre = max(r["pretrain_flops"] for r in docs["rows"])
    shared = ("slm", "slm-pn", "slm-hn")
    for spec, label, setting in ((by["slm"]["specialize_flops"]["0:cap200"], "0:cap200", "<= 200 steps"),
                                 (max(by[k]["specialize_flops"]["0:early"] for k in shared), "0:early",
                                  "early stopping")):
        p = plan(grid, Budgets(n_domains=7, pretrain_flops=pre, specialize_flops=spec))
        for name in shared:
            e = p["methods"][name]
            assert e["fits"] and e["spec_setting"] == setting, (name, spec)
            assert e["ppl"] == pytest.approx(by[name]["after"][label]), (name, label)
            assert e["ci"] == pytest.approx(by[name]["after_ci"][label])
        for e in p["methods"].values():
            assert not e["fits"] or e["c_specialize"] <= spec * (1 + 1e-9)
        assert p["recommendation"]["method"] in p["recommendation"]["tied"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "recipes.plan", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env=os.environ | {"PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_cli_help_and_a_real_run(tmp_path):
    h = _cli("--help", cwd=REPO)
    assert h.returncode == 0, h.stderr
    for opt in ("--n-domains", "--pretrain-budget", "--specialize-budget", "--domain-tokens", "--max-params", "--grid",
                "--out", "--rate", "compare-d128.json"):
        assert opt in h.stdout, opt
    assert "packedfromdocs/compare-d128/results.json" in "".join(h.stdout.split())  # argparse wraps at hyphens
    rows = SLM + [row("slm-is", 1, 0.0, 60.0, 3.0, 5e11)]
    grid = write_grid(tmp_path, rows)
    # 1h at 1e9 FLOP/s = 3.6e12 of pretraining (above the measured range), 500s = 5e11 per domain: slm-is fits
    r = _cli("--grid", str(grid), "--n-domains", "3", "--pretrain-budget", "1h", "--specialize-budget", "500s",
             "--rate", "1e9", "--out", str(tmp_path / "plan"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert out["budgets"]["pretrain_flops"] == pytest.approx(3.6e12)
    assert out["budgets"]["specialize_flops"] == pytest.approx(5e11)
    want = plan(load_grid(grid), Budgets(n_domains=3, pretrain_flops=3.6e12, specialize_flops=5e11))
    assert out["recommendation"]["method"] == want["recommendation"]["method"] == "slm-is"
    assert out["methods"]["slm"]["ppl"] == pytest.approx(want["methods"]["slm"]["ppl"])
    assert "Recommendation: slm-is" in r.stdout and "stops paying" in r.stdout
    png = tmp_path / "plan" / "total_cost_vs_domains.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_cli_on_the_packaged_grid_picks_the_setting_that_fits(tmp_path):
    """`mlx-pn plan` without --grid, from a subprocess: the packaged grid's settings at two specialization
    budgets, as the planner computes them in this process."""
    grid = load_grid()
    pre = max(r["pretrain_flops"] for r in grid["rows"]) * 1.02
    for spec in (5e12, 1.5e13):
        out = tmp_path / f"p{spec:g}"
        r = _cli("--n-domains", "3", "--pretrain-budget", f"{pre:.6g}", "--specialize-budget", f"{spec:g}",
                 "--out", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got = json.loads((out / "plan.json").read_text())
        want = plan(grid, Budgets(n_domains=3, pretrain_flops=float(f"{pre:.6g}"), specialize_flops=spec))
        assert got["recommendation"]["method"] == want["recommendation"]["method"]
        for name, e in want["methods"].items():
            assert got["methods"][name]["spec_setting"] == e["spec_setting"]
            assert got["methods"][name]["fits"] == e["fits"]
            assert not e["fits"] or e["c_specialize"] <= spec
        assert "Grid: the packaged compare-d128.json" in r.stdout and f"Recommendation: {want['recommendation']['method']}" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, msg", [
    (["--pretrain-budget", "lots"], "--pretrain-budget 'lots': not a budget; give FLOPs (8e11) or time"),
    (["--n-domains", "0"], "--n-domains 0: needs at least 1 domain"),
    (["--grid", "nope.json"], "nope.json: no such file"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, msg):
    base = {"--n-domains": "2", "--pretrain-budget": "1e12", "--specialize-budget": "1e11",
            "--out": str(tmp_path / "p")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = _cli(*[x for kv in base.items() for x in kv], cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_hours_use_the_rate_measured_here(tmp_path):
    """A budget in time -> FLOPs at the grid's small model's rate on this machine, measured once and cached."""
    from mlx_pn.recipes.plan import grid_rate, parse_budget

    grid = load_grid()
    rate = grid_rate(grid, tmp_path)
    assert rate > 1e6 and (tmp_path / "costs" / "machine_rate.json").is_file()
    assert grid_rate(grid, tmp_path) == rate  # cached: the same figure, not a second measurement
    assert parse_budget("2h", "--x", lambda: rate) == pytest.approx(7200 * rate)
    assert parse_budget("8e11", "--x", lambda: 1 / 0) == 8e11  # FLOPs never ask for a rate


def test_cells_stopped_by_the_step_cap_are_counted(tmp_path):
    """A cell whose fine-tuning ended at its step cap at its best evaluation (validation still falling) is
    counted, from stopped_by or, without it, from the steps against the cell config's cap; plan_text says so."""
    cells = [{"row": "slm", "budget": 1, "size": 0, "domain_tokens": 1000, "stopped_by": "steps", "finetune_steps": 100,
              "best_step": 100},
             {"row": "slm", "budget": 1, "size": 0, "domain_tokens": 1000, "stopped_by": "early stopping",
              "finetune_steps": 60, "best_step": 30},
             {"row": "slm", "budget": 1, "size": 0, "domain_tokens": 1000, "finetune_steps": 100, "best_step": 100,
              "config": {"finetune": {"steps": 100}}},
             {"row": "slm", "budget": 1, "size": 0, "domain_tokens": 1000, "stopped_by": "steps", "finetune_steps": 100,
              "best_step": 80}]  # the cap, but validation had turned: not counted
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"sizes": [0], "rows": [row("slm", 1, 1e12, 100.0, 2.0, 1e11)], "cells": cells}))
    grid = load_grid(p)
    assert grid["rows"][0]["cap_hit"] == {"0": [2, 4]}
    res = plan(grid, Budgets(n_domains=1, pretrain_flops=1e12, specialize_flops=1e11))
    assert res["methods"]["slm"]["cap_hit"] == [2, 4] and "slm 2/4" in plan_text(grid, res)
    packed = pack(json.loads(p.read_text()), "x")
    assert packed["rows"][0]["cap_hit"] == {"0": [2, 4]} and "cells" not in packed


def test_the_docs_examples_are_this_codes_output(tmp_path, monkeypatch, capsys):
    """docs/comparison.md's `mlx-pn plan` examples print, today, exactly the output shown under them (a changed
    packaged grid or planner fails here until the docs are rerun)."""
    import re
    import shlex

    from mlx_pn.recipes.plan import main

    text = (REPO / "docs" / "comparison.md").read_text()
    examples = re.findall(r"```bash\n(mlx-pn plan [^\n]+)\n```\n```\n(.*?)\n```", text, re.S)
    assert len(examples) == 2
    monkeypatch.chdir(tmp_path)
    for cmd, shown in examples:
        main(shlex.split(cmd)[2:])
        assert capsys.readouterr().out.rstrip() == shown.rstrip(), cmd


def test_a_budget_without_finished_pretraining_is_not_a_measurement(tmp_path):
    """recipes.compare's rows carry pretrain_flops 0 where a budget's pretraining has not finished: the planner
    reads only the finished budget (here: the larger one, so a smaller budget is below the measured range)."""
    rows = [row("slm", 1, 0.0, 120.0, 2.0, 1e11), row("slm", 2, 2e12, 90.0, 2.0, 1e11)]
    _, p = plan_of(tmp_path, rows, pretrain_flops=1e12)
    assert not p["methods"]["slm"]["fits"] and "below the measured range" in p["methods"]["slm"]["why"]
    _, p = plan_of(tmp_path, rows, pretrain_flops=2e12)
    assert p["methods"]["slm"]["ppl"] == 90.0


def test_the_plot_draws_one_line_per_cost(tmp_path):
    """Methods whose costs agree within 5% share a line (FLOP matching leaves them a fraction apart); one that
    does not fit never shares a line with one that does."""
    from mlx_pn.compare.plan_plot import plot_plan, same_cost

    rows = [row("slm", 1, 1e12, 100.0, 2.0, 1e11), row("slm-pn", 1, 0.999e12, 95.0, 9.0, 1e11),
            row("llm", 1, 1e12, 80.0, 2.0, 3e11), row("slm-is", 1, 0.0, 60.0, 3.0, 5e11)]
    _, p = plan_of(tmp_path, rows, n_domains=4)
    assert same_cost(p["methods"]) == [["slm", "slm-pn"], ["llm"], ["slm-is"]]
    png = plot_plan(p, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
