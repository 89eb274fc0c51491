"""tools/bench_serve.py's memory accounting (--memory): each way's resident weights are what it holds, an array
shared by the trunk and its experts counted once."""

from __future__ import annotations

import json

from mlx_pn.models.build import save_model
from mlx_pn.models.projected import ProjectedArgs, build_projected, projected_config
from mlx_pn.models.transformer import ModelArgs

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)


def _child(spec, tmp_path, capsys) -> dict:
    from tools.bench_serve import memory_child

    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec))
    memory_child(str(f))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_trunk_with_its_cache_vs_separate_models(tmp_path, capsys):
    trunk = build_projected(ARGS, ProjectedArgs(k=4, h=3), seed=0)
    save_model(tmp_path / "trunk", trunk, projected_config(trunk, "slm-pn"))
    p32 = 4  # float32 bytes
    mlp = 3 * ARGS.hidden_size * ARGS.intermediate_size * ARGS.num_hidden_layers * p32
    trunk_bytes = trunk.num_params() * p32
    hist = [0.1, 0.2, 0.3, 0.4]
    a = _child({"mode": "trunk", "trunk": str(tmp_path / "trunk"), "selects": {"a": 0, "b": 1, "c": 2, "h": hist},
                "cache": 2}, tmp_path, capsys)
    assert a["weights"] == trunk_bytes + 2 * mlp  # the trunk and the 2 experts left in the cache: their MLPs only
    assert a["materialise_ms"] > 0 and a["peak_rss"] >= a["rss"] > 0
    folders = []
    for i in range(3):
        save_model(tmp_path / f"sep{i}", trunk.specialize(i))
        folders.append(str(tmp_path / f"sep{i}"))
    b = _child({"mode": "separate", "folders": folders}, tmp_path, capsys)
    assert b["weights"] == 3 * trunk.specialize(0).num_params() * p32  # 3 whole models, nothing shared
