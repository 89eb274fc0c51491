"""The paper's baselines (llm, slm-nopt, slm-d, slm-is) on tiny models and the bundled real text."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_map

from mlx_pn.config import ConfigError
from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs
from mlx_pn.train.distill import TeacherCache, TeacherCacheBatches, distill_loss, teacher_topk

from conftest import tiny_config

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)
QUIET = dict(log=lambda *a: None)


def _xy(B=2, L=10, seed=0):
    t = np.random.default_rng(seed).integers(0, ARGS.vocab_size, (B, L + 1)).astype(np.int32)
    return mx.array(t[:, :-1]), mx.array(t[:, 1:])


def test_distill_loss_reduces_to_its_parts():
    student, teacher = build_model(ARGS, seed=1), build_model(ARGS, seed=2)
    x, y = _xy()
    ce = nn.losses.cross_entropy(student(x), y, reduction="mean")
    ids, logp = teacher_topk(teacher, x, 8, 2.0)
    assert ids.shape == (2, 10, 8) and mx.logsumexp(logp, axis=-1).max().item() < 0  # top-8 of 97: less than all
    assert abs(distill_loss(student, x, y, ids, logp, alpha=0.0, temperature=2.0) - ce).item() < 1e-6
    # a student identical to the teacher, full distribution (k = V): KL = 0, loss = (1 - alpha) CE
    ids, logp = teacher_topk(student, x, ARGS.vocab_size, 2.0)
    assert abs(distill_loss(student, x, y, ids, logp, alpha=0.3, temperature=2.0) - 0.7 * ce).item() < 1e-5
    # another teacher: the soft term is positive and matches a direct KL over the full vocabulary
    ids, logp = teacher_topk(teacher, x, ARGS.vocab_size, 2.0)
    p = mx.softmax(teacher(x) / 2.0, axis=-1)
    kl = mx.sum(p * (mx.log(p) - nn.log_softmax(student(x) / 2.0, axis=-1)), axis=-1).mean()
    got = distill_loss(student, x, y, ids, logp, alpha=1.0, temperature=2.0)
    assert kl.item() > 0 and abs(got - 4.0 * kl).item() < 1e-4
    # top-k: the k teacher entries plus one bucket for the rest, on both sides (a KL over k + 1 outcomes)
    ids, logp = teacher_topk(teacher, x, 5, 2.0)
    q = mx.softmax(student(x) / 2.0, axis=-1)
    pk, qk = mx.exp(logp), mx.take_along_axis(q, ids, axis=-1)
    pr, qr = 1 - pk.sum(-1), 1 - qk.sum(-1)
    want = (mx.sum(pk * mx.log(pk / qk), -1) + pr * mx.log(pr / qr)).mean()
    got = distill_loss(student, x, y, ids, logp, alpha=1.0, temperature=2.0)
    assert want.item() > 0 and abs(got - 4.0 * want).item() < 1e-4


def test_teacher_cache_equals_live_and_resumes(tmp_path):
    teacher = build_model(ARGS, seed=3)
    L, k = 8, 5
    tokens = np.random.default_rng(1).integers(0, ARGS.vocab_size, 700 * L + 1).astype(np.int32)
    from mlx_pn.data.batches import PackedBatches

    base = PackedBatches(tokens, L, 4, seed=0)
    cache = TeacherCache(tmp_path / "t", base.n_windows, L, k)
    key = {"teacher": "a"}
    assert cache.build(teacher, tokens, 1.5, key, 64, **QUIET) > 0
    tb, ids, logp = TeacherCacheBatches(base, cache).batch(3, 2)
    w = tb.reshape(-1, L + 1)[:, :-1]
    live_ids, live_logp = teacher_topk(teacher, mx.array(w), k, 1.5)
    gather = lambda i, lp: np.take_along_axis(lp, np.argsort(i, -1), -1)  # noqa: E731 - top-k order may differ
    np.testing.assert_allclose(gather(ids.reshape(-1, L, k), logp.reshape(-1, L, k).astype(np.float32)),
                               gather(np.array(live_ids), np.array(live_logp)), atol=2e-3)
    assert cache.build(teacher, tokens, 1.5, key, 64) == 0.0  # done: nothing recomputed
    part = tmp_path / "t" / "part_00001.ids.npy"
    before = part.read_bytes()
    part.unlink()
    (tmp_path / "t" / "manifest.json").unlink()  # as if killed before the end: only the missing part reruns
    cache2 = TeacherCache(tmp_path / "t", base.n_windows, L, k)
    cache2.build(teacher, tokens, 1.5, key, 64)
    assert part.read_bytes() == before


def _cfg(tiny_run, out, method, **kw):
    cfg, _ = tiny_run
    ov = {"data.dir": str(cfg.data_dir), "method": method, "cluster.k": 4, "cluster.k_importance": 4,
          "pretrain.steps": 24, "finetune.steps": 12, "pretrain.eval_every": 12, "pretrain.save_every": 12}
    ov.update(kw)
    return tiny_config(out, **ov)


def test_importance_windows_follow_the_domain_histogram(clustered, tmp_path):
    from mlx_pn.methods.importance import importance_indices
    from mlx_pn.methods.layout import method_clustering

    _, data = clustered
    cfg = _cfg(clustered, tmp_path, "slm-is")
    clusters = method_clustering(cfg, "k_importance")  # cluster.k_importance = 4
    g = clusters.labels("generic", "train")
    for d in ("legal", "drama"):
        idx, stats = importance_indices(cfg, data, d)
        got = np.bincount(g[idx], minlength=4) / len(idx)
        want = np.asarray(clusters.histograms[d]) / np.sum(clusters.histograms[d])
        assert 0.5 * np.abs(got - want).sum() < 0.05 and stats["n"] == len(g)
    assert not np.allclose(np.bincount(g[importance_indices(cfg, data, "legal")[0]], minlength=4),
                           np.bincount(g, minlength=4))  # really resampled, not the generic mix


def test_a_resampled_pool_too_small_for_the_pretraining_is_named(clustered, tmp_path):
    """slm-is draws pretrain.steps x batch windows from the resampled pool: many passes over a small effective
    sample memorise it (compare-d128: 34-108 passes, test perplexity > 1,600); the stage says so, with the fixes."""
    from mlx_pn.methods.importance import MEMORISE_PASSES, importance_stage

    _, data = clustered
    for steps, warned in ((1, False), (100_000, True)):
        cfg = _cfg(clustered, tmp_path, "slm-is", **{"pretrain.steps": steps})
        lines = []
        importance_stage(cfg, data, "legal").before(None, None, lines.append)
        said = [ln for ln in lines if "will memorise it" in ln]
        assert bool(said) == warned, lines
    assert "larger data.generic" in said[0] and "fewer pretrain.steps" in said[0] and MEMORISE_PASSES > 1


@pytest.mark.slow
def test_every_baseline_end_to_end(clustered, tmp_path_factory):
    """llm, slm-d (disk and live teacher), slm-nopt and slm-is: pretrain, specialize, export through mlx-lm."""
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.methods import pretrain, specialize
    from mlx_pn.models.build import load_model

    _, data = clustered
    out = tmp_path_factory.mktemp("baselines")
    domain = "legal"
    ppl = {}
    for method, kw in [("llm", {}), ("slm-d", {"distill.cache": "disk"}), ("slm-d", {"distill.cache": "live"}),
                       ("slm-nopt", {}), ("slm-is", {})]:
        cfg = _cfg(clustered, out, method, **kw)
        s = pretrain(cfg, data, **QUIET)
        assert "cost" in s
        live = kw.get("distill.cache") == "live"
        r = specialize(cfg, data, domain, resume=not live, **QUIET)  # the live run redoes the disk run's stage
        assert r["method"] == method and r["after"][domain]["ppl"] < r["before"][domain]["ppl"]
        assert r["cost"]["flops"] > 0 and r["cost"]["tokens"] > 0
        ppl[method + kw.get("distill.cache", "")] = r["after"][domain]["ppl"]
        final = out / f"specialize-{method}" / domain / "final"
        model = load_model(final)
        expect = cfg.large.hidden_size if method == "llm" else cfg.model.hidden_size or 64
        assert model.args.hidden_size == expect
        if method != "llm":
            rep = export_mlx_lm(model, cfg.data_dir / "tokenizer" / "hf", tmp_path_factory.mktemp("exp"), force=True)
            assert rep["max_abs_logit_diff"] < 1e-4
        if method == "slm-d":
            assert r["distill"]["mode"] == kw["distill.cache"]
            assert set(r["cost_parts"]) == {"teacher_finetune", "teacher_forward", "finetune"}
        if method == "slm-is":
            s = json.loads((out / "pretrain-slm-is" / domain / "summary.json").read_text())
            assert s["importance_resampling"]["n"] > 0 and "importance_pretraining" in r["cost_parts"]
        if method == "slm-nopt":
            assert r["pretrained_from"] is None and s["steps"] == 0
            assert r["before"][domain]["ppl"] > 0.5 * data.tokenizer.vocab_size  # a random model
    assert all(np.isfinite(list(ppl.values())))

    # a finished slm-is pretraining rerun with another width is stale, not "already done"
    from mlx_pn.fingerprint import StaleRunError
    from mlx_pn.models.build import save_model

    with pytest.raises(StaleRunError, match=r"model\.hidden_size: 64 -> 32"):
        pretrain(_cfg(clustered, out, "slm-is", **{"model.hidden_size": 32}), data, **QUIET)
    # the teacher fine-tuned again: the distilled student's results are stale (its parent is unchanged)
    teacher = out / "specialize-llm" / domain / "final"
    model = load_model(teacher)
    model.update(tree_map(lambda v: v * 1.01, model.parameters()))
    save_model(teacher, model)
    with pytest.raises(StaleRunError, match=r"teacher\.weights"):
        specialize(_cfg(clustered, out, "slm-d", **{"distill.cache": "live"}), data, domain, **QUIET)


def test_baselines_name_what_is_missing(tiny_run, tmp_path):
    from mlx_pn.methods import specialize

    _, data = tiny_run
    for method, hint in [("slm-d", "`mlx-pn pretrain --method slm-d`"), ("slm-is", "`mlx-pn importance --domain legal`"),
                         ("llm", "`mlx-pn pretrain --method llm`")]:
        with pytest.raises(ConfigError, match=hint):
            specialize(_cfg(tiny_run, tmp_path / method, method), data, "legal", **QUIET)
    with pytest.raises(ConfigError, match="distill.cache"):
        tiny_config(tmp_path, **{"distill.cache": "ram"})
