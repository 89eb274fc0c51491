"""The grid's specialization settings (step caps, selection rules), its parallel cells, the entropy table, and the
stability invariant of slm-pn / slm-hn over seeds (issue 21)."""

import json

import pytest

from mlx_pn.compare.grid import CompareConfig, Row, Spec, grid_rows, row_spec, spec_config, specs
from mlx_pn.compare.results import _ordering, entropy_markdown, paired_differences, setting_name
from mlx_pn.config import ConfigError
from mlx_pn.methods import load_config
from mlx_pn.methods.layout import specialize_dir

from conftest import REPO

TINY = REPO / "recipes" / "configs" / "compare-tiny.yaml"


def _cfg(out, **ov):
    return load_config(TINY, {"out": str(out), **{k: str(v) for k, v in ov.items()}}, cls=CompareConfig)


def test_settings_labels_folders_and_which_rows_run_them(tmp_path):
    cfg = _cfg(tmp_path, **{"grid.domain_tokens": "0", "grid.finetune_steps": "200,0",
                            "grid.selects": "most-frequent,best-loss,histogram", "finetune.max_epochs": "10"})
    got = specs(cfg)
    assert [s.label for s in got] == ["0:cap200", "0:early", "0:cap200-most-frequent", "0:cap200-best-loss",
                                      "0:cap200-histogram"]
    assert setting_name("0:cap200-best-loss") == "all tok, <= 200 steps, best-loss"
    assert setting_name("0:early") == "all tok, early stopping" and setting_name(2000) == "2k tok"
    slm, pn, hn, mix = (Row(m, m) for m in ("slm", "slm-pn", "slm-hn", "slm-mix"))
    best, hist, mf = got[3], got[4], got[2]
    assert row_spec(slm, best) is None  # the slm picks no starting model
    assert row_spec(mix, hist) is None  # separate experts have no histogram projection
    assert row_spec(pn, mf) == Spec(0, 200)  # its own rule: the plain setting's folder, not a second run
    assert row_spec(hn, hist) == Spec(0, 200) and row_spec(hn, mf) == mf
    c = spec_config(cfg, best)
    assert (c.finetune.steps, c.select, c.specialize_tag) == (200, "best-loss", "cap200-best-loss")
    c.method = "slm-pn"
    assert specialize_dir(c, "legal").name == "legal-cap200-best-loss"
    assert specialize_dir(spec_config(cfg, got[1]), "legal", 2048).name == "legal-2048tok-early"
    assert spec_config(cfg, Spec(0)) is cfg  # no tag: the config as it is (a grid without settings, as before)


@pytest.mark.parametrize("key,value,match", [
    ("grid.finetune_steps", "-1", "step caps must be >= 0"),
    ("grid.selects", "most-frequnt", "unknown rule 'most-frequnt'"),
    ("grid.selects", "auto", "unknown rule 'auto'"),
])
def test_bad_settings_are_one_line_errors(tmp_path, key, value, match):
    with pytest.raises(ConfigError, match=match):
        specs(_cfg(tmp_path, **{key: value}))


def test_no_cap_needs_an_epoch_cap(tmp_path):
    cfg = _cfg(tmp_path, **{"grid.finetune_steps": "0"})
    cfg.finetune.max_epochs = 0
    with pytest.raises(ConfigError, match="finetune.max_epochs"):
        specs(cfg)


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="grid.jobs"):
        _cfg(tmp_path, **{"grid.jobs": "0"})


def test_a_selection_setting_is_paired_with_the_slms_plain_setting():
    runs = [{"row": r, "budget": 1.0, "seed": s, "after": after}
            for s in (0, 1, 2) for r, after in (("slm", {"0:cap8": 20.0 + s}),
                                                ("slm-pn", {"0:cap8": 19.0 + s, "0:cap8-best-loss": 21.0 + s}))]
    got = paired_differences(runs, ["0:cap8", "0:cap8-best-loss"], "slm", {"0:cap8-best-loss": "0:cap8"})
    by = {d["size"]: d for d in got}
    assert by["0:cap8"]["mean_nll_diff"] < 0 < by["0:cap8-best-loss"]["mean_nll_diff"]
    assert by["0:cap8-best-loss"]["n"] == 3


def test_the_entropy_ordering_is_called_only_outside_the_noise():
    assert _ordering({"a": (0.5, 0.1, 5), "b": (0.1, 0.1, 5)}, "a") == "yes"
    assert _ordering({"a": (0.1, 0.1, 5), "b": (0.5, 0.1, 5)}, "a") == "no (largest: b)"
    assert _ordering({"a": (0.2, 0.1, 5), "b": (0.25, 0.1, 5)}, "a").startswith("not told apart")
    assert _ordering({"a": (0.2, None, 1), "b": (0.1, None, 1)}, "a") == "yes (n=1: no interval)"
    cells = [{"row": r, "budget": 1.0, "domain": d, "seed": s, "size": "0", "after_nll": v + 0.01 * s}
             for s in range(3) for r, d, v in (("slm", "a", 3.0), ("slm", "b", 3.0), ("slm-pn", "a", 3.5),
                                               ("slm-pn", "b", 2.9))]
    md = "\n".join(entropy_markdown({"domain_entropy": {"a": 2.0, "b": 0.5}, "domains": ["a", "b"], "cells": cells,
                                     "sizes": [0], "routed_rows": ["slm-pn"]}))
    assert "| all tok | slm-pn | +0.500 ± 0.000 | -0.100 ± 0.000 | yes |" in md
    assert "a (H 2.00) | b (H 0.50)" in md  # highest entropy first


@pytest.mark.slow
def test_parallel_grid_with_settings_matches_its_own_rerun(tmp_path):
    """Two processes (grid.jobs 2) run the sweep and the cells with a step cap, early stopping and a selection
    rule; a second run recomputes nothing and every setting's numbers are in results.json."""
    from mlx_pn.compare.grid import run_grid

    ov = {"grid.variants": "{}", "grid.methods": "slm,slm-pn", "grid.domain_tokens": "0", "grid.domains": "legal",
          "grid.finetune_steps": "4,0", "finetune.max_epochs": "0.05", "grid.selects": "best-loss",
          "grid.budgets": "1", "grid.seeds": "0", "grid.lr_sweep": "1,2", "grid.jobs": "2"}
    cfg = _cfg(tmp_path / "g", **ov)
    first = run_grid(cfg, log=lambda *a: None)
    assert sorted((tmp_path / "g" / "logs").glob("*.log"))  # each process wrote its own log
    labels = ["0:cap4", "0:early", "0:cap4-best-loss"]
    assert first["sizes"] == labels
    rows = {e["row"]: e for e in first["rows"]}
    assert set(rows["slm-pn"]["after"]) == set(labels) and set(rows["slm"]["after"]) == set(labels[:2])
    steps = {(c["row"], c["size"]): c["finetune_steps"] for c in first["cells"]}
    assert steps[("slm", "0:cap4")] == 4 and steps[("slm", "0:early")] > 4  # the cap, and no cap
    assert {c["select"] for c in first["cells"] if c["size"] == "0:cap4-best-loss"} == {"best-loss"}
    assert all(json.loads(p.read_text())["config"]["specialize_tag"]
               for p in (tmp_path / "g").rglob("legal-*/results.json"))
    again = run_grid(cfg, log=lambda *a: None)
    assert [c["after_nll"] for c in again["cells"]] == [c["after_nll"] for c in first["cells"]]


@pytest.mark.slow
def test_projected_networks_spread_over_seeds_no_more_than_twice_the_slm(tmp_path):
    """The stability invariant at tiny size: over 5 seeds, slm-pn's and slm-hn's 95% half-width of macro
    perplexity after fine-tuning is at most 2x the slm's (their coefficients' steps matched: projected.coef_lr)."""
    from mlx_pn.compare.grid import run_grid

    ov = {"grid.variants": "{}", "grid.methods": "slm,slm-pn,slm-hn", "grid.domain_tokens": "0",
          "grid.domains": "legal", "grid.budgets": "1", "grid.seeds": "0,1,2,3,4", "pretrain.steps": "60",
          "pretrain.eval_every": "30", "pretrain.save_every": "60", "finetune.steps": "16"}
    res = run_grid(_cfg(tmp_path / "s", **ov), log=lambda *a: None)
    ci = {e["row"]: e["after_ci"]["0"] for e in res["rows"]}
    print("95% half-widths of macro ppl after fine-tuning:", ci)
    assert ci["slm-pn"] <= 2 * ci["slm"] and ci["slm-hn"] <= 2 * ci["slm"], ci
