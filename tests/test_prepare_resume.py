"""A prepare killed mid-corpus resumes where it stopped, to outputs equal to an uninterrupted run's byte for byte:
- while writing shards (mlx_pn.data.shard_parts): at its last finished part; finished parts are kept (checked
  against their sha256, a damaged one written again), the rest written;
- while indexing (mlx_pn.data.index.build_index, resume=True): at its last resume point (progress.json).
The kill is the house's MLX_PN_CRASH_AT_WRITE hook (mlx_pn.io) at a chosen durable write; small parts (PART_BYTES)
and resume points (CHECKPOINT_BYTES) make the bundled text several of each."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY

# prepare with 150 kB parts and 300 kB between the index's resume points, printing "WRITE <number> <path>" for
# every durable write (the number MLX_PN_CRASH_AT_WRITE counts)
RUN = ("import sys, mlx_pn.io as io, mlx_pn.data.shard_parts as sp, mlx_pn.data.index as ix\n"
       "sp.PART_BYTES, ix.CHECKPOINT_BYTES = 150_000, 300_000\n"
       "folder, file = io._atomic_folder, io._atomic_file\n"
       "def log(path):\n"
       "    print('WRITE', io._writes + 1, path, file=sys.stderr, flush=True)\n"
       "io._atomic_folder = lambda dest, write, kind: (log(dest), folder(dest, write, kind))[1]\n"
       "io._atomic_file = lambda path, write: (log(path), file(path, write))[1]\n"
       "from mlx_pn.recipes.prepare import main\n"
       "main(sys.argv[1:])\n")


def _prepare(out, crash=None):
    args = ["--config", str(TINY), "--corpus", "config", "--out", str(out), "--data.max_docs", "0",
            "--data.domains", "legal=bundled:legal"]
    env = {k: v for k, v in os.environ.items() if k != "MLX_PN_CRASH_AT_WRITE"}
    if crash is not None:
        env["MLX_PN_CRASH_AT_WRITE"] = str(crash)
    p = subprocess.run([sys.executable, "-c", RUN, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    writes = [(int(n), path) for n, path in re.findall(r"WRITE (\d+) (\S+)", p.stderr)]
    return p, writes


def _part_writes(writes, name="generic"):
    return [(n, path.rsplit("/", 1)[1]) for n, path in writes if f"/.{name}.parts/0" in path]


def _shards(out, folder="shards"):
    """Every file of the shard sets (or another folder of DATA) but verified.json (file times), as bytes."""
    root = out / "data" / folder
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "verified.json"}


@pytest.mark.slow
def test_a_prepare_killed_mid_corpus_resumes_at_its_last_part_to_identical_shards(tmp_path):
    ref, ref_writes = _prepare(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    parts = _part_writes(ref_writes)
    assert len(parts) >= 6, parts  # the bundled generic text is several parts of 150 kB
    assert not (tmp_path / "ref" / "data" / "shards" / ".generic.parts").exists()  # removed once the shards exist

    crash_at = parts[3][0]  # just before part 00003 is renamed into place: parts 0-2 are finished
    killed, _ = _prepare(tmp_path / "run", crash=crash_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = tmp_path / "run" / "data" / "shards" / ".generic.parts"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["00000", "00001", "00002", "meta.json"]
    assert not (tmp_path / "run" / "data" / "shards" / "generic").exists()
    with open(folder / "00001" / "train.bin", "r+b") as f:  # a finished part damaged while the run was down
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    kept = {"00000", "00002"}

    resumed, writes = _prepare(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = resumed.stdout + resumed.stderr
    assert "00001: damaged" in out and "resuming: 2 finished part(s)" in out, out[-3000:]
    # parts 0 and 2 kept, not rewritten; 1 (damaged) and 3.. written
    assert [name for _, name in _part_writes(writes)] == [name for _, name in parts if name not in kept]
    assert _shards(tmp_path / "run") == _shards(tmp_path / "ref")
    assert not folder.exists()

    # killed just after the shard set's rename, before its parts were removed: the rerun removes them
    final = next(n for n, path in ref_writes if path.endswith("/data/shards/generic"))
    killed, _ = _prepare(tmp_path / "late", crash=f"{final}+")
    late = tmp_path / "late" / "data" / "shards"
    assert killed.returncode == -9 and (late / ".generic.parts").exists() and (late / "generic").exists()
    rerun, _ = _prepare(tmp_path / "late")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not (late / ".generic.parts").exists() and _shards(tmp_path / "late") == _shards(tmp_path / "ref")


@pytest.mark.slow
def test_a_prepare_killed_while_indexing_resumes_at_its_last_resume_point(tmp_path):
    ref, ref_writes = _prepare(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    points = [n for n, path in ref_writes if path.endswith("/.generic.building/progress.json")]
    assert len(points) >= 5, ref_writes  # the bundled generic text: ~3 MB, a resume point every 300 kB

    killed, _ = _prepare(tmp_path / "run", crash=f"{points[2]}+")  # just after the third resume point
    assert killed.returncode == -9, killed.stderr[-2000:]
    index = tmp_path / "run" / "data" / "index"
    assert (index / ".generic.building" / "progress.json").exists() and not (index / "generic").exists()

    resumed, writes = _prepare(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "index generic: resuming at document" in resumed.stdout + resumed.stderr
    again = [n for n, path in writes if path.endswith("/.generic.building/progress.json")]
    assert len(again) == len(points) - 3  # the first three resume points were not indexed again
    assert _shards(tmp_path / "run", "index") == _shards(tmp_path / "ref", "index")
    assert _shards(tmp_path / "run") == _shards(tmp_path / "ref")
    assert not (index / ".generic.building").exists()


def test_parts_of_other_settings_are_started_over(tmp_path):
    from mlx_pn.data.shard_parts import Parts

    folder = tmp_path / ".x.parts"
    Parts(folder, {"source": "a"})
    (folder / "00000").mkdir()
    (folder / "00000" / "part.json").write_text(json.dumps({"documents": 1, "bytes": 5, "itemsize": 2,
                                                            "splits": {}, "sources": None}))
    assert Parts(folder, {"source": "a"}).kept(0, 1, 5) is not None
    assert Parts(folder, {"source": "b"}).done == {}  # another source: the old part is not reused
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]


def test_shards_are_the_same_for_any_part_size_and_number_of_threads(tiny_run, tmp_path, monkeypatch):
    import mlx_pn.data.shard_parts as shard_parts
    from mlx_pn.data.shards import build_shards
    from mlx_pn.data.sources import load_documents, split_documents

    cfg, data = tiny_run
    docs = split_documents(load_documents("bundled:legal", max_docs=200), 0.1, 0.1)
    got = []
    for part_bytes, workers in ((10**9, 1), (20_000, 2), (1, 1)):
        monkeypatch.setattr(shard_parts, "PART_BYTES", part_bytes)
        out = tmp_path / f"{part_bytes}-{workers}"
        m = build_shards("legal", docs, data.tokenizer, out, "bundled:legal", workers=workers, log=lambda *a: None)
        got.append((m, {s: np.fromfile(out / "legal" / f"{s}.bin", dtype=m["dtype"]).tobytes() for s in docs}))
        assert not (out / ".legal.parts").exists()  # the parts folder is gone once the shard set is in place
    assert got[0] == got[1] == got[2]


def test_two_writers_of_one_shard_set_take_turns(tiny_run, tmp_path, monkeypatch):
    """The parts folder is shared by whoever writes the same corpus (two launches, two runs with one data.dir): the
    second writer waits for the first (mlx_pn.data.building), then finds the shard set in place, whole."""
    import threading

    import mlx_pn.data.shard_parts as shard_parts
    from mlx_pn.data.shards import build_shards
    from mlx_pn.data.sources import load_documents, split_documents

    cfg, data = tiny_run
    docs = split_documents(load_documents("bundled:legal", max_docs=200), 0.1, 0.1)
    monkeypatch.setattr(shard_parts, "PART_BYTES", 20_000)
    solo = build_shards("legal", docs, data.tokenizer, tmp_path / "solo", "bundled:legal", log=lambda *a: None)
    logs, results = [[], []], [None, None]

    def run(i):
        results[i] = build_shards("legal", docs, data.tokenizer, tmp_path / "both", "bundled:legal",
                                  log=logs[i].append)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == solo
    assert sum(any("waiting for it" in line for line in log) for log in logs) <= 1
    for split in docs:
        assert (tmp_path / "both" / "legal" / f"{split}.bin").read_bytes() == \
            (tmp_path / "solo" / "legal" / f"{split}.bin").read_bytes()
    assert not (tmp_path / "both" / ".legal.parts").exists()


@pytest.mark.slow  # spawns two worker processes
def test_an_interrupted_index_build_resumes_to_the_same_files_with_workers(tmp_path, monkeypatch):
    """build_index(resume=True) stopped mid-stream (here by an error in the source after 300 documents, past a few
    resume points and with files longer than the last one) resumes with 2 worker processes to the files of one
    uninterrupted pass."""
    import mlx_pn.data.index as ix
    from mlx_pn.data.sources import load_documents

    docs = load_documents("bundled:generic", max_docs=600)
    monkeypatch.setattr(ix, "CHECKPOINT_BYTES", 200_000)

    def broken():
        yield from docs[:300]
        raise OSError("the disk went away")

    with pytest.raises(OSError):
        ix.build_index(broken(), tmp_path / "run", resume=True, log=lambda *a: None)
    done = json.loads((tmp_path / "run" / ix.PROGRESS).read_text())["documents"]
    assert 0 < done < 300
    said = []
    ix.build_index(iter(docs), tmp_path / "run", resume=True, workers=2, log=said.append)
    assert said and f"resuming at document {done:,}" in said[0]
    ix.build_index(iter(docs), tmp_path / "ref", workers=1)
    for f in sorted(p.name for p in (tmp_path / "ref").iterdir()):
        assert (tmp_path / "run" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
