"""mlx-pn serve on a slm-pn / slm-hn run: one resident trunk, experts materialised on demand (and cached), equal to
the exported materialised experts; fine-tuned specialists from their own folders; the top-2 ensemble route."""

import copy
import json
import threading
import urllib.request

import mlx.core as mx
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # pretrains a tiny projected network per method

QUIET = {"log": lambda *a: None}


def _pn_run(clustered, out, method):
    """(cfg, data) of a tiny slm-pn / slm-hn run pretrained in `out` on the session's data and k = 4 clustering."""
    from mlx_pn.methods import pretrain

    cfg, data = clustered
    c = copy.deepcopy(cfg)
    c.data.dir, c.out, c.method, c.cluster.k = str(cfg.data_dir), str(out), method, 4
    c.pretrain.steps, c.finetune.steps, c.finetune.eval_every = 12, 4, 2
    pretrain(c, data, **QUIET)
    return c, data


@pytest.mark.parametrize("method", ["slm-pn", "slm-hn"])
def test_on_demand_experts_equal_their_materialised_exports(clustered, tmp_path, method):
    from mlx_lm.utils import load as mlx_lm_load

    from mlx_pn.export import export_mlx_lm
    from mlx_pn.methods.layout import method_clustering
    from mlx_pn.models.projected import load_projected
    from mlx_pn.serve.models import load_run_models

    cfg, data = _pn_run(clustered, tmp_path / "run", method)
    models = load_run_models(cfg, **QUIET)
    assert list(models) == [*data.domain_names(), "generic"]
    assert all(m.experts is not None and not m.error for m in models.values())  # nothing specialized: all on demand
    trunk = load_projected(tmp_path / "run" / f"pretrain-{method}" / "final")
    hists = method_clustering(cfg).histograms
    x = mx.array([data.tokenizer.encode("The court held that the patient")])
    for name in ["legal", "generic"]:
        # the stage's choice: slm-pn's default select is the top cluster, slm-hn's the histogram; generic: histogram
        by_hist = method == "slm-hn" or name == "generic"
        select = np.asarray(hists[name], np.float32) if by_hist else int(np.argmax(hists[name]))
        folder = tmp_path / f"export-{name}"
        export_mlx_lm(trunk.specialize(select), cfg.data_dir / "tokenizer" / "hf", folder)
        exported, _ = mlx_lm_load(str(folder))
        diff = mx.abs(models[name].load()(x) - exported(x)).max().item()
        assert diff < 1e-5, (name, diff)
        # a different expert is measurably different: the comparison can fail
        other = trunk.specialize((select + 1) % 4 if not by_hist else np.roll(select, 1))
        assert mx.abs(other(x) - exported(x)).max().item() > 1e-3


def test_expert_cache_is_lru_and_experts_share_the_trunks_arrays(clustered, tmp_path):
    from mlx_pn.models.projected import load_projected
    from mlx_pn.serve.experts import ExpertCache, weights_bytes

    cfg, _ = _pn_run(clustered, tmp_path / "run", "slm-pn")
    trunk = load_projected(tmp_path / "run" / "pretrain-slm-pn" / "final")
    hist = np.full(4, 0.25, np.float32)
    cache = ExpertCache(trunk, {"a": 0, "b": 1, "b2": 1, "h": hist}, size=2)
    a = cache.get("a")
    assert cache.get("a") is a and (cache.hits, cache.misses) == (1, 1)
    cache.get("b")
    assert cache.get("b2") is cache.get("b")  # the same cluster: one expert
    cache.get("h")  # evicts a (least recently used)
    assert cache.cached() == ["b", "h"] and cache.misses == 3
    assert cache.get("a") is not a and cache.misses == 4
    # an expert adds only its MLP weights to the trunk's: attention, norms and embeddings are the trunk's arrays
    args = trunk.args
    mlp = 3 * args.hidden_size * args.intermediate_size * args.num_hidden_layers * 4  # float32
    assert weights_bytes([trunk, a]) - weights_bytes([trunk]) == mlp
    assert weights_bytes([a]) > mlp  # on its own it is a whole model
    with pytest.raises(ValueError, match="--expert-cache 0"):
        ExpertCache(trunk, {}, size=0)


def test_an_unreadable_trunk_is_each_on_demand_models_error(clustered, tmp_path):
    from mlx_pn.serve.models import load_run_models

    cfg, data = _pn_run(clustered, tmp_path / "run", "slm-pn")
    weights = tmp_path / "run" / "pretrain-slm-pn" / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    models = load_run_models(cfg, **QUIET)  # no exception: the server would still start and answer /health
    assert list(models) == [*data.domain_names(), "generic"]
    for m in models.values():
        assert m.model is None and "cannot serve from the projected network" in m.error
        assert str(weights.parent) in m.error


def test_projected_run_serves_fine_tuned_specialists_from_their_folders_over_http(clustered, tmp_path):
    from mlx_lm.generate import generate

    from mlx_pn.methods import specialize
    from mlx_pn.serve.app import build_app
    from mlx_pn.serve.server import make_server

    cfg, data = _pn_run(clustered, tmp_path / "run", "slm-pn")
    specialize(cfg, data, "legal", **QUIET)
    app = build_app(cfg, data.tokenizer, k=4, expert_cache=1, **QUIET)
    assert app.models["legal"].experts is None and app.models["legal"].source.parts[-3:] == (
        "specialize-slm-pn", "legal", "final")
    assert app.models["drama"].experts is app.models["generic"].experts  # one trunk, one cache
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/completions"

    def post(body):
        req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read()), r.headers

    try:
        for name in ["drama", "legal", "generic", "drama"]:
            r, _ = post({"model": name, "prompt": "The court held that", "max_tokens": 6})
            m = app.models[name]
            ids = m.tokenizer.encode("The court held that")
            assert r["choices"][0]["text"] == generate(m.load(), m.tokenizer, ids, max_tokens=6), name
        cache = app.models["drama"].experts
        assert cache.cached() == ["drama"] and cache.misses == 3  # size 1: drama, generic, drama again
        app.ensemble = 2  # c-BTM's top-2: the route names both models and their weights
        r, headers = post({"prompt": "The court held that the defendant", "max_tokens": 4})
        mix = r["route"]["ensemble"]
        assert len(mix) == 2 and mix[0]["model"] == r["route"]["model"] and mix[0]["weight"] >= mix[1]["weight"]
        assert abs(sum(e["weight"] for e in mix) - 1) < 1e-3 and mix[1]["model"] in headers["X-MLX-PN-Route"]
    finally:
        server.shutdown()
        server.server_close()
