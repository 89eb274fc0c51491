"""The planner's wall time: a training rate measured on this machine, cached in the run folder, and the grid's
"this grid takes about N hours on this machine" line (mlx_pn.costs, mlx_pn.compare.grid.time_estimate)."""

import json
import math

from mlx_pn.compare.grid import CompareConfig, grid_rows, row_config, time_estimate
from mlx_pn.costs import (RATE_FILE, calibrated_rate, duration_text, measure_train_rate, train_flops_per_token)
from mlx_pn.methods import load_config
from mlx_pn.models.build import model_args
from mlx_pn.models.transformer import ModelArgs

from conftest import REPO

SMALL = ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4, vocab_size=97)


def test_measured_rate_is_the_timed_step():
    """compile=False (the tests' setting): a few ms per step of a 30k-parameter model; the rate is the counted
    FLOPs of one (4, 16) step over its measured time, so it must land between 1 MFLOP/s and 1 TFLOP/s here."""
    rate = measure_train_rate(SMALL, seq_len=16, batch_size=4, precision="fp32", compile=False)
    step_flops = train_flops_per_token(SMALL, 16) * 4 * 16
    assert 1e6 < rate < 1e12 and step_flops / rate < 5.0, (rate, step_flops)


def test_rate_is_measured_once_per_machine_and_shape(tmp_path):
    calls = []

    def fake(args, seq, batch, precision, compile):
        calls.append((seq, batch, precision))
        return 1e9 * len(calls)

    assert calibrated_rate(SMALL, 16, 4, tmp_path, "fp32", False, measure=fake) == (1e9, False)
    assert calibrated_rate(SMALL, 16, 4, tmp_path, "fp32", False, measure=fake) == (1e9, True)  # from the file
    assert calibrated_rate(SMALL, 16, 8, tmp_path, "fp32", False, measure=fake) == (2e9, False)  # another shape
    saved = json.loads((tmp_path / "costs" / RATE_FILE).read_text())["rates"]
    assert [e["flops_per_s"] for e in saved] == [1e9, 2e9] and saved[0]["key"]["batch_size"] == 4
    assert saved[0]["key"]["host"] and saved[0]["key"]["device"]
    (tmp_path / "costs" / RATE_FILE).write_text("{torn")  # unreadable: measured again, file rewritten
    assert calibrated_rate(SMALL, 16, 4, tmp_path, "fp32", False, measure=fake) == (3e9, False)
    assert len(calls) == 3


def test_duration_text():
    assert duration_text(30) == "about 1 minute"
    assert duration_text(40 * 60) == "about 40 minutes"
    assert duration_text(2.5 * 3600) == "about 2.5 hours"
    assert duration_text(3 * 86400) == "about 3.0 days"


def test_grid_time_estimate_counts_every_cell(tmp_path):
    """One slm row, two budgets, two domains: the estimate is (pretraining at each budget + fine-tuning per domain)
    FLOPs over the rate, to the second."""
    cfg = load_config(REPO / "recipes" / "configs" / "compare-tiny.yaml",
                      {"out": str(tmp_path), "grid.methods": "slm", "grid.budgets": "1,2"}, cls=CompareConfig)
    cfg.grid.variants = {}  # compare-tiny's STLM rows off: the slm row alone
    if hasattr(cfg.grid, "seeds"):
        cfg.grid.seeds = "0"
    rows, vocab, k = grid_rows(cfg), 512, 4
    assert [r.name for r in rows] == ["slm"]
    want = 0.0
    for b in (1.0, 2.0):
        c = row_config(cfg, rows[0], b, vocab, k)
        per = train_flops_per_token(model_args(c.model, vocab), c.pretrain.seq_len)
        want += per * c.pretrain.steps * c.pretrain.batch_size * c.pretrain.grad_accum * c.pretrain.seq_len
        want += per * c.finetune.steps * c.finetune.batch_size * c.finetune.grad_accum * c.finetune.seq_len * 2
    line = time_estimate(cfg, rows, [1.0, 2.0], [0], ["legal", "drama"], vocab, k,
                         measure=lambda *a: want / 7200)  # a rate that makes the grid exactly 2 hours
    assert line.startswith("[compare] this grid takes about 2.0 hours on this machine"), line
    assert f"{want:.3g} training FLOPs" in line and "measured now" in line
    assert "cached" in time_estimate(cfg, rows, [1.0, 2.0], [0], ["legal", "drama"], vocab, k,
                                     measure=lambda *a: math.nan)
