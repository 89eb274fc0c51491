"""An hf: source (a Hugging Face dataset, here a local one saved as parquet: nothing reaches a hub in tests) streams
through prepare with everything `datasets` writes kept under the run's data folder: HOME and HF_DATASETS_CACHE
point at empty folders and stay empty."""

import os
import subprocess
import sys

from conftest import REPO, TINY


def _dataset(folder, n=400):
    """The first n bundled generic documents as a parquet dataset folder (data/train-00000.parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlx_pn.data.sources import load_documents

    docs = load_documents("bundled:generic", max_docs=n)
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": [d.text for d in docs]}), folder / "data" / "train-00000.parquet")
    return docs


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_hf_dataset_streams_into_prepare_and_caches_only_under_the_run(tmp_path):
    docs = _dataset(tmp_path / "ds")
    home, cache = tmp_path / "home", tmp_path / "hf-cache"
    home.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    env.update(HOME=str(home), HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "recipes.prepare", "--config", str(TINY), "--out", str(out),
                        "--corpus", f"hf:{tmp_path / 'ds'}", "--data.domains", "legal=bundled:legal"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert _files(home) == [] and _files(cache) == []
    assert any((out / "data" / "hf").iterdir())  # datasets' lock files: under the run
    import json

    m = json.loads((out / "data" / "shards" / "generic" / "manifest.json").read_text())
    assert sum(s["documents"] for s in m["splits"].values()) == len(docs)


def test_a_local_dataset_without_a_cache_folder_writes_nothing_that_stays(tmp_path, monkeypatch):
    import tempfile

    from mlx_pn.data.sources import read_source

    docs = _dataset(tmp_path / "ds", n=50)
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    got = list(read_source(f"hf:{tmp_path / 'ds'}"))
    assert [d.text for d in got] == [d.text for d in docs] and got[0].id == "ds:0"
    assert _files(temp) == []  # the temporary cache went with the stream
