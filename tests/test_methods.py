"""The cluster-routed methods (slm-pn, slm-hn, slm-mix) on tiny models and the bundled real text."""

import copy
import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.config import ConfigError, TrainConfig
from mlx_pn.data.batches import ClusterGroupedBatches, PackedBatches
from mlx_pn.methods.routed import expert_windows
from mlx_pn.models.build import build_model
from mlx_pn.models.projected import ProjectedArgs, build_projected, load_projected
from mlx_pn.models.transformer import ModelArgs, Transformer
from mlx_pn.train.losses import cross_entropy
from mlx_pn.train.loop import RunOptions, train

from conftest import tiny_config

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)


def _tokens(B=3, L=12, seed=0):
    return mx.array(np.random.default_rng(seed).integers(0, ARGS.vocab_size, (B, L)).astype(np.int32))


@pytest.mark.parametrize("pargs", [ProjectedArgs(k=4, m=3, h=5),
                                   ProjectedArgs(k=4, h=3, coefficients="hypernet", hypernet_hidden=16)],
                         ids=["pn", "hn"])
def test_materialised_slm_equals_projected_network(pargs):
    model = build_projected(ARGS, pargs, seed=1)
    x, ids = _tokens(), mx.array([0, 3, 1], dtype=mx.int32)
    logits = model(x, ids)
    for b in range(3):
        slm = model.specialize(int(ids[b].item()))
        assert type(slm) is Transformer
        assert mx.abs(slm(x[b:b + 1]) - logits[b:b + 1]).max().item() < 1e-5
    hist = np.array([0.1, 0.5, 0.0, 0.4], np.float32)  # histogram mode (beyond the paper)
    ref = model(x, mx.array(np.tile(hist, (3, 1))))
    assert mx.abs(model.specialize(hist)(x) - ref).max().item() < 1e-5
    assert mx.abs(model(x, mx.array(hist)) - ref).max().item() < 1e-5  # one condition for the whole batch
    grouped = model(x, mx.array(2, dtype=mx.int32))  # grouped batches: a scalar id, one materialised MLP
    assert mx.abs(grouped - model(x, mx.array([2, 2, 2], dtype=mx.int32))).max().item() < 1e-5
    # the materialised weights start near the trunk's init scale (std 0.02 for gate/up), on average over experts
    var = np.mean([np.var(np.array(model.specialize(i).model.layers[0].mlp.gate_proj.weight)) for i in range(4)])
    assert 0.005 < var**0.5 < 0.05


def test_identity_codes_give_the_hard_mixture():
    """h = k, E = I, M = I: expert i's MLP is basis matrix i (the paper's mixture special case)."""
    k = 3
    model = build_projected(ARGS, ProjectedArgs(k=k, m=k, h=k), seed=0)
    model.coefficients.codes = mx.eye(k)
    model.coefficients.mix = mx.broadcast_to(mx.eye(k), (ARGS.num_hidden_layers, k, k))
    experts = [build_model(ARGS, seed=10 + i) for i in range(k)]
    shared = [(n, p) for n, p in tree_flatten(experts[0].parameters()) if ".mlp." not in n]
    model.load_weights(shared, strict=False)
    for n, _ in tree_flatten(experts[0].parameters()):
        if ".mlp." in n:  # basis r of this matrix = expert r's matrix
            basis = mx.stack([dict(tree_flatten(e.parameters()))[n] for e in experts])
            model.load_weights([(n, basis)], strict=False)
    for e in experts:  # each expert on the shared trunk
        e.load_weights(shared, strict=False)
    x, ids = _tokens(), mx.array([2, 0, 1], dtype=mx.int32)
    ref = mx.stack([e(x) for e in experts])[ids, mx.arange(x.shape[0])]  # each sequence through its own expert
    assert mx.abs(model(x, ids) - ref).max().item() < 1e-5
    for i in range(k):
        w = dict(tree_flatten(model.specialize(i).parameters()))
        assert all(np.array_equal(np.array(w[n]), np.array(p)) for n, p in tree_flatten(experts[i].parameters()))


def test_clustered_batches_align_and_restrict():
    toks = np.arange(10 * 8 + 1, dtype=np.int32)  # 10 windows of 8: window w starts with token 8w
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], np.int32)
    b = PackedBatches(toks, 8, 2, seed=3, labels=labels)
    x, ids = b.batch(5, 2)
    assert x.shape == (2, 2, 9) and ids.shape == (2, 2)
    assert np.array_equal(labels[x[..., 0] // 8], ids)
    sub = PackedBatches(toks, 8, 2, seed=3, indices=expert_windows(labels, 10, 0))
    seen = np.concatenate([sub.batch(s)[:, :, 0].ravel() // 8 for s in range(8)])
    assert set(seen) == {0, 3, 6, 9}
    assert np.array_equal(sub.batch(4), sub.batch(4))


def test_grouped_batches_hold_one_cluster_each():
    toks = np.arange(40 * 8 + 1, dtype=np.int32)
    labels = np.arange(40, dtype=np.int32) % 3
    b = ClusterGroupedBatches(toks, 8, 4, labels, seed=1)
    x, ids = b.batch(7, 3)
    assert x.shape == (3, 4, 9) and ids.shape == (3,)
    for a in range(3):
        assert set(labels[x[a, :, 0] // 8]) == {ids[a]} and len(set(x[a, :, 0])) == 4
    assert all(np.array_equal(u, v) for u, v in zip(b.batch(7, 3), (x, ids)))


def _tcfg(**kw):
    d = dict(steps=30, batch_size=4, seq_len=32, lr=3e-3, min_lr=3e-4, warmup=3, eval_every=10, eval_batches=2,
             save_every=4, log_every=1, compile=False)
    d.update(kw)
    return TrainConfig(**d)


@pytest.mark.slow
def test_projected_training_falls_and_resumes_exactly(tiny_run, tmp_path):
    _, data = tiny_run
    toks, valid = data.corpora["generic"].tokens("train"), data.corpora["generic"].tokens("valid")
    n = (len(toks) - 1) // 32
    labels = np.arange(n, dtype=np.int32) % 4  # any labelling: exactness does not depend on it
    vlabels = np.arange(len(valid) // 32, dtype=np.int32) % 4
    args = ModelArgs(hidden_size=48, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
                     vocab_size=data.tokenizer.vocab_size)
    quiet = dict(run=RunOptions(valid_tokens=valid, valid_labels=vlabels, loss_fn=cross_entropy), log=lambda *a: None)
    batches = lambda: PackedBatches(toks, 32, 4, 1, labels=labels)  # noqa: E731

    full = build_projected(args, ProjectedArgs(k=4), seed=0)
    r_full = train(full, _tcfg(), batches(), tmp_path / "full", **quiet)
    losses = [h["loss"] for h in r_full.history if "loss" in h]
    assert np.mean(losses[-5:]) < losses[0] - 0.4, losses

    class Crash(Exception):
        pass

    class Interrupt:
        def __init__(self, inner):
            self.inner = inner

        def batch(self, step, micro=1):
            if step >= 9:
                raise Crash()
            return self.inner.batch(step, micro)

    with pytest.raises(Crash):
        train(build_projected(args, ProjectedArgs(k=4), seed=0), _tcfg(save_every=8), Interrupt(batches()),
              tmp_path / "part", **quiet)
    resumed = build_projected(args, ProjectedArgs(k=4), seed=5)
    r_res = train(resumed, _tcfg(save_every=8), batches(), tmp_path / "part", **quiet)
    loss = lambda r: [(h["step"], h["loss"]) for h in r.history if "loss" in h]  # noqa: E731
    assert loss(r_res) == loss(r_full)
    wf, wr = dict(tree_flatten(full.parameters())), dict(tree_flatten(resumed.parameters()))
    assert all(np.array_equal(np.array(wf[k]), np.array(wr[k])) for k in wf)


def _method_cfg(tiny_run, out, method, **ov):
    cfg, data = tiny_run
    c = copy.deepcopy(cfg)
    c.data.dir, c.out, c.method, c.cluster.k = str(cfg.data_dir), str(out), method, 4
    c.pretrain.steps, c.finetune.steps, c.finetune.eval_every = 12, 4, 2
    for k, v in ov.items():
        setattr(c, k, v)
    return c


# One pretraining per method (shared by its cases); each case specializes another domain.
@pytest.mark.parametrize("method,select,domain,grouped", [
    ("slm-pn", "most-frequent", "legal", False), ("slm-pn", "histogram", "drama", False),
    ("slm-hn", "auto", "legal", False), ("slm-pn", "best-loss", "medical", True),
    ("slm-mix", "best-loss", "legal", False), ("slm-mix", "all", "medical", False)])
@pytest.mark.slow
def test_pretrain_specialize_export_each_method(clustered, tmp_path_factory, method, select, domain, grouped,
                                                monkeypatch):
    import mlx_pn.methods as stages
    import mlx_pn.train.loop as loop
    from mlx_pn.export import export_mlx_lm
    from mlx_pn.methods.layout import method_clustering

    _, data = clustered
    out = tmp_path_factory.getbasetemp() / f"methods-{method}{'-grouped' * grouped}"  # shared by the selects
    cfg = _method_cfg(clustered, out, method, select=select)
    cfg.projected.grouped = grouped
    calls = []
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda model, t, b, o, *a, **kw: calls.append((b, o)) or real_train(
        model, t, b, o, *a, **kw))
    stages.pretrain(cfg, data, log=lambda *a: None)
    if method == "slm-mix" and calls:  # each expert's batches hold only windows of its cluster
        labels = method_clustering(cfg).labels("generic", "train")  # cluster.k = 4
        assert len(calls) == 4
        for i, (b, o) in enumerate(calls):
            assert o.name == f"expert-{i:02d}"
            assert set(labels[b.window_ids(0, 3 * b.batch_size)]) == {i}
    if grouped:
        assert type(calls[0][0]).__name__ == "ClusterGroupedBatches"
    if method != "slm-mix":
        saved = load_projected(out / f"pretrain-{method}" / "final")
        assert saved.pargs.k == 4 and (saved.pargs.coefficients == "hypernet") == (method == "slm-hn")
    lines = []
    r = stages.specialize(cfg, data, domain, log=lines.append)
    assert r["method"] == method and r["domain"] == domain
    hist = method_clustering(cfg).histograms[domain]
    # the choice is printed when it is made: before the test splits are measured, fine-tuning and all
    said = next(i for i, ln in enumerate(lines) if f"[specialize {method}] {r['select']}: " in ln)
    assert said < next(i for i, ln in enumerate(lines) if ln.startswith("[evaluate]"))
    if select in ("most-frequent",):
        assert r["selected_cluster"] == int(np.argmax(hist))
        assert f"most-frequent: cluster {r['selected_cluster']}, " in lines[said]
    if select in ("histogram", "auto"):
        assert r["selected_cluster"] == "histogram" and r["select"] == "histogram"
        assert "histogram: projecting with" in lines[said]
    if select in ("best-loss", "all"):
        assert len(r["candidates_valid_nll"]) == 4
        assert r["selected_cluster"] == int(min(r["candidates_valid_nll"], key=r["candidates_valid_nll"].get))
    if select == "best-loss":
        assert sum(f"best-loss: cluster {i}/4: " in ln for i in range(4) for ln in lines) == 4
    final = out / f"specialize-{method}" / domain / "final"
    assert json.loads((final.parent / "results.json").read_text())["after"][domain]["ppl"] > 1
    from mlx_pn.models.build import load_model

    report = export_mlx_lm(load_model(final), cfg.data_dir / "tokenizer" / "hf", tmp_path_factory.mktemp("exp"),
                           force=True)  # verify=True: mlx_lm.load + logits compared
    assert report["max_abs_logit_diff"] < 1e-4


def test_unknown_method_and_missing_clusters(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'slm-pn'"):
        tiny_config(tmp_path, method="slm-pm")
    with pytest.raises(ConfigError, match="histogram needs a projected model"):
        tiny_config(tmp_path, method="slm-mix", select="histogram")
    from mlx_pn.methods import pretrain

    cfg = _method_cfg(tiny_run, tmp_path, "slm-pn")
    cfg.cluster.k = 7  # never clustered
    with pytest.raises(ConfigError, match="run `mlx-pn cluster` with this config"):
        pretrain(cfg, tiny_run[1], log=lambda *a: None)


@pytest.mark.slow
def test_recipes_train_one_expert_and_name_missing_clusters(clustered, tmp_path, capsys, monkeypatch):
    from recipes import pretrain as pretrain_recipe

    cfg, _ = clustered
    argv = ["--config", str(cfg_path()), "--out", str(tmp_path), "--data.dir", str(cfg.data_dir),
            "--data.max_docs", "300", "--pretrain.steps", "8", "--cluster.k", "4", "--method", "slm-mix"]
    pretrain_recipe.main(argv + ["--expert", "1"])
    assert (tmp_path / "pretrain-slm-mix" / "expert-01" / "final" / "model.safetensors").exists()
    assert not (tmp_path / "pretrain-slm-mix" / "expert-00").exists()
    assert "1/4 experts done" in capsys.readouterr().out
    # started as a clone's `python -m recipes.pretrain`, the hint names the clone's form of the command
    monkeypatch.setattr(sys, "argv", [str(Path(pretrain_recipe.__file__)), *argv])
    with pytest.raises(SystemExit) as e:
        pretrain_recipe.main(argv[:-1] + ["slm-pn", "--cluster.k", "5"])
    assert e.value.code == 2 and "`python -m recipes.cluster` with this config" in capsys.readouterr().err


def cfg_path():
    from conftest import TINY

    return TINY


@pytest.mark.slow
def test_mixture_experts_are_shared_out_over_ranks(clustered, tmp_path, monkeypatch):
    """Launched on 2 ranks, rank 1 trains experts 1 and 3 (each alone), and writes no mixture summary."""
    import mlx_pn.methods as stages
    import mlx_pn.train.loop as loop
    from mlx_pn.train import distributed as dist

    monkeypatch.setattr(dist, "world", lambda: (None, 1, 2))
    trained = []
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda model, t, b, o, run, **kw: trained.append((o.name, run.group)) or
                        real_train(model, t, b, o, run, **kw))
    cfg = _method_cfg(clustered, tmp_path, "slm-mix")
    cfg.pretrain.steps = 8
    s = stages.pretrain(cfg, clustered[1], log=lambda *a: None)
    assert trained == [("expert-01", dist.SOLO), ("expert-03", dist.SOLO)]
    assert s["experts_done"] == 2 and not (tmp_path / "pretrain-slm-mix" / "summary.json").exists()
