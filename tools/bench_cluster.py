"""The cluster stage at two or more corpus sizes: windows/s and peak RSS, to show memory does not grow with the corpus.

    python -m tools.bench_cluster --mb 25 100 --work /tmp/cluster/bench

For each size: a generic corpus of that many MB of real sentences (the bundled generic text's sentences drawn into
unique documents, seeded), the data stage on it (tiny preset, bundled domains) in one process, then `recipes.cluster`
in another; the peak RSS is that process's (wait4's ru_maxrss). Prints one row per size and the ratio of the largest
size's peak to the smallest's (1.0 = flat). `cluster_figures(run_dir, overrides)` is the part a data benchmark can
call on a run it has prepared.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLED_GENERIC = REPO / "mlx_pn" / "data" / "bundled" / "generic.jsonl.gz"
TINY = REPO / "recipes" / "configs" / "tiny.yaml"
# The stage's settings for the benchmark: 256-token windows (the paper's); both sizes fit k-means on the same
# bounded sample, so the only thing that grows is the number of windows embedded and assigned.
CLUSTER_FLAGS = ["--cluster.window", "256", "--cluster.fit_windows", "20000", "--cluster.k", "16",
                 "--cluster.k_importance", "256"]


def make_corpus(path: Path, mb: float, seed: int = 0) -> Path:
    """A JSONL generic corpus of ``mb`` MB: documents of 10-40 sentences drawn (seeded) from the bundled generic
    text, so every document is unique real-ish prose. Reused when it is already there."""
    if path.exists():
        return path
    with gzip.open(BUNDLED_GENERIC, "rt", encoding="utf-8") as f:
        text = " ".join(json.loads(line)["text"] for line in f)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s) <= 400]
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, target, written = path.with_suffix(".tmp"), int(mb * 1e6), 0
    with open(tmp, "w", encoding="utf-8") as out:
        while written < target:
            doc = " ".join(sentences[i] for i in rng.integers(0, len(sentences), int(rng.integers(10, 41))))
            line = json.dumps({"text": doc}) + "\n"
            out.write(line)
            written += len(line.encode())
    os.replace(tmp, path)
    return path


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` (output to ``log``) -> (wall seconds, peak RSS MB of that process tree's largest process)."""
    t0 = time.time()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return time.time() - t0, usage.ru_maxrss / 1024


def cluster_figures(run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Run the cluster stage on the prepared run ``run_dir`` in its own process -> {windows, seconds, windows_per_s,
    peak_rss_mb}. ``overrides``: extra --key value flags (default: the tiny preset and CLUSTER_FLAGS)."""
    run_dir = Path(run_dir)
    flags = overrides if overrides is not None else ["--config", str(TINY), *CLUSTER_FLAGS]
    secs, rss = _run([sys.executable, "-m", "recipes.cluster", "--out", str(run_dir), *flags],
                     run_dir / "bench_cluster.log")
    manifests = sorted((run_dir / "data" / "clusters").glob("*/manifest.json"))
    windows = max(sum(json.loads(m.read_text())["windows"].values()) for m in manifests)
    return {"windows": windows, "seconds": round(secs, 1), "windows_per_s": round(windows / secs, 1),
            "peak_rss_mb": round(rss, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[25, 100], help="generic corpus sizes in MB")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for the corpora and runs")
    args = ap.parse_args(argv)
    rows = []
    for mb in args.mb:
        corpus = make_corpus(args.work / f"generic-{mb:g}MB.jsonl", mb)
        run = args.work / f"run-{mb:g}MB"
        run.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run / "data" / "clusters", ignore_errors=True)  # this benchmark's own run: measure afresh
        data_flags = {"out": str(run), "data.generic": str(corpus), "data.max_docs": "0"}
        prep_s, _ = _run([sys.executable, "-c", "import sys, json; from mlx_pn.methods import load_config; "
                          "from mlx_pn.data.prepare import prepare_data; "
                          "prepare_data(load_config(sys.argv[1], json.loads(sys.argv[2])))", str(TINY),
                          json.dumps(data_flags)], run / "bench_prepare.log")
        fig = cluster_figures(run, ["--config", str(TINY), "--data.generic", str(corpus), "--data.max_docs", "0",
                                    *CLUSTER_FLAGS])
        rows.append({"mb": mb, "prepare_s": round(prep_s, 1), **fig})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| generic MB | windows | cluster s | windows/s | cluster peak RSS MB |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mb']:g} | {r['windows']:,} | {r['seconds']} | {r['windows_per_s']} | {r['peak_rss_mb']} |")
    if len(rows) > 1:
        print(f"\npeak RSS ratio, largest / smallest corpus: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f} "
              f"for {rows[-1]['windows'] / rows[0]['windows']:.1f}x the windows; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
