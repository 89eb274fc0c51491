"""Crash test: kill -9 every stage at random moments, relaunch until it finishes, compare with a clean run.

    python -m tools.killtest                              # prepare, pretrain, specialize on tiny settings
    python -m tools.killtest --kills 20 --seed 3 --stage prepare --stage pretrain
    python -m tools.killtest --stage compare --kills 5       # recipes.compare on a reduced tiny grid
    python -m tools.killtest --mode writes                # crash exactly at durable-write boundaries
    python -m tools.killtest --signal TERM                # SIGTERM (then SIGKILL after 30 s) instead of kill -9
    python -m tools.killtest --mode concurrent            # two launches of each stage at once on one folder
    python -m tools.killtest --add "mine=python -m recipes.pretrain --config my.yaml --out {out}" --stage mine

For each stage (run in order; each one works on the outputs of the previous ones):
1. the *reference*: the command run once, uninterrupted, in REF/ (its wall time T), then once more to
   measure the start-up cost S of a launch that finds everything done (and to check that a re-run
   changes no file);
2. the *killed* run in KILL/: the same command launched, killed with SIGKILL (the whole process group)
   after a seeded random delay in [0.1 T, 0.9 T], relaunched, ... `--kills` times, then launched once
   more and left to finish. A launch that finishes before its kill ends an *attempt*: it is checked
   like the last one, and the next attempt starts again from the previous stages' outputs. With
   `--mode writes` each launch is instead killed by the process itself at its c-th durable write
   (before or after the rename; c = 1, 1+, 2, 2+, ...), via the MLX_PN_CRASH_AT_WRITE hook of
   mlx_pn/io.py. `--signal TERM` sends SIGTERM instead of SIGKILL (and SIGKILL 30 s later if the launch
   is still running), and reports the exit codes the launches ended with. `--mode concurrent` instead
   starts a second launch of the same command on the same folder while the first runs (after a seeded
   delay within the first half of the first one's work after start-up): each must finish (exit 0) or stop with the run lock's one line ("pid N is writing ..."),
   never a traceback, and after one more launch the outputs must equal the reference;
3. after every kill, every visible output is checked complete: checkpoints by their sha256, shards by
   their manifest, JSON/JSONL parse, safetensors/npy/spm load. Temporary files (.NAME.tmp-PID-*) may
   exist between launches and must be gone when the stage is done;
4. KILL/ is compared with REF/: same files; safetensors tensors bit-identical (or within --atol);
   JSON/JSONL equal after dropping timings (wall_s, elapsed_s, tokens_per_s, ...) and writing both
   output folders as OUT.

A stage's command is any command line with {out} for its output folder (and `python` for this
interpreter): adding a stage is one `--add NAME=COMMAND` (or one line in STAGES). Set
MLX_DISABLE_COMPILE=1 (done here) so that the resumed run is bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = "--config recipes/configs/tiny.yaml --out {out} --data.max_docs 300"
TRAIN = ("--pretrain.steps 40 --pretrain.save_every 3 --pretrain.eval_every 10 --pretrain.log_every 5 "
         "--finetune.steps 24 --finetune.save_every 2 --finetune.eval_every 4 --finetune.log_every 2 "
         "--finetune.patience 2")
STAGES = {
    "prepare": f"python -m recipes.prepare --corpus config {TINY}",
    "pretrain": f"python -m recipes.pretrain {TINY} {TRAIN}",
    "specialize": f"python -m recipes.specialize {TINY} {TRAIN} --domain legal",
}
# Not in the default run (minutes per launch on 2 cores): `--stage compare`, with its own data and output.
EXTRA = {
    "compare": "python -m recipes.compare --config recipes/configs/compare-tiny.yaml --out {out} "
               "--grid.domains legal --grid.methods slm,slm-pn --grid.variants {}",
}
VOLATILE = {"seconds", "timestamp"}  # and every key ending in _s (wall_s, elapsed_s, tokens_per_s, ...)
IGNORED_FILES = {"verified.json"}  # shard-check stamps hold file mtimes
TEMP = re.compile(r"^\..+\.(tmp|old)-\d+-")


@dataclass
class StageReport:
    name: str
    kills: int = 0
    launches: int = 0
    resumed_from_checkpoint: int = 0
    startup_kills: int = 0
    temps_seen: int = 0
    crash_points: list[str] = field(default_factory=list)
    ref_s: float = 0.0
    startup_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    compared_files: int = 0
    attempts: int = 1
    max_abs_diff: float = 0.0
    rerun_unchanged: bool = True
    exit_codes: list[int] = field(default_factory=list)  # of the launches a signal ended (--signal TERM)
    lock_refusals: int = 0  # concurrent mode: second launches stopped by the run lock

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------
# Launching and killing


def _argv(command: str, out: Path) -> list[str]:
    parts = shlex.split(command.replace("{out}", str(out)))
    return [sys.executable if p == "python" else p for p in parts]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "MLX_DISABLE_COMPILE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "OPENBLAS_NUM_THREADS": os.environ.get("KILLTEST_BLAS_THREADS", "1"),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MLX_PN_CRASH_AT_WRITE", None)
    env.update(extra or {})
    return env


def launch(argv: list[str], log: Path, kill_after: float | None = None, env: dict | None = None,
           timeout: float = 600, sig: int = signal.SIGKILL, codes: list | None = None) -> tuple[int | None, float, str]:
    """Run argv in its own process group; send `sig` to the group after kill_after seconds (SIGKILL 30 s
    later if it is still running; its exit code appended to `codes`).
    -> (exit code, or None when we killed it; seconds; output)."""
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        p = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env or _env(),
                             start_new_session=True)
        try:
            rc = p.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise RuntimeError(f"{argv} ran past {timeout}s; see {log}")
            os.killpg(p.pid, sig)  # our own child's group: the command and anything it started
            try:
                got = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                got = p.wait()
            if codes is not None:
                codes.append(got)
            rc = None
    return rc, time.perf_counter() - t0, log.read_text(errors="replace")


# ---------------------------------------------------------------------------------------------
# Checks


def temp_leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*") if TEMP.match(p.name))


def _visible_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def check_complete(root: Path) -> list[str]:
    """Every visible output is whole: the problems found (empty = all good)."""
    import mlx_pn  # noqa: F401  (before mlx.core: the BLAS set-up)
    import mlx.core as mx
    import numpy as np

    from mlx_pn.data.shards import MANIFEST, Corpus
    from mlx_pn.data.sources import DataError
    from mlx_pn.train.checkpoint import CheckpointError, verify_checkpoint

    problems = []
    for ck in sorted(root.rglob("step_*")):
        if ck.is_dir() and ck.parent.name == "checkpoints" and not ck.name.startswith("."):
            try:
                verify_checkpoint(ck)
            except CheckpointError as e:
                problems.append(f"checkpoint: {e}")
    for man in sorted(root.rglob(MANIFEST)):
        if any(part.startswith(".") for part in man.relative_to(root).parts):
            continue
        if man.parent.parent.name == "shards":
            try:
                Corpus(man.parent).verify(force=True)
            except (DataError, OSError, KeyError) as e:
                problems.append(f"shards: {e}")
    for f in _visible_files(root):
        try:
            if f.suffix == ".json":
                json.loads(f.read_text())
            elif f.suffix == ".jsonl":
                for n, line in enumerate(f.read_text().splitlines(), 1):
                    if line.strip():
                        json.loads(line)
            elif f.suffix == ".safetensors":
                mx.eval(list(mx.load(str(f)).values()))
            elif f.suffix == ".npy":
                np.load(f)
            elif f.name == "spm.model":
                import sentencepiece as spm

                spm.SentencePieceProcessor(model_file=str(f))
        except Exception as e:  # noqa: BLE001 - any failure to read is what we look for
            problems.append(f"half-written {f.relative_to(root)}: {type(e).__name__}: {str(e)[:200]}")
    return problems


def _normalize(obj, outs: tuple[str, ...]):
    if isinstance(obj, dict):
        return {k: _normalize(v, outs) for k, v in obj.items() if k not in VOLATILE and not k.endswith("_s")}
    if isinstance(obj, list):
        return [_normalize(v, outs) for v in obj]
    if isinstance(obj, str):
        for o in outs:
            obj = obj.replace(o, "OUT")
        return obj
    return obj


def _mask_text(text: str, outs: tuple[str, ...]) -> str:
    """Output folders -> OUT, durations ("2 s", "3 min") -> T, and markdown table columns headed in seconds
    ("pretrain s", "wall s") -> T."""
    for o in outs:
        text = text.replace(o, "OUT")
    lines, timed = text.splitlines(), set()
    for n, line in enumerate(lines):
        cells = line.split("|")
        if not line.startswith("|"):
            timed = set()
        elif n + 1 < len(lines) and set(lines[n + 1].replace("|", "").strip()) <= set("-: ") and "-" in lines[n + 1]:
            timed = {i for i, c in enumerate(cells) if re.search(r"(^|\s)(s|seconds|wall s|min)$", c.strip())}
        elif timed:
            lines[n] = "|".join("T" if i in timed else c for i, c in enumerate(cells))
    return re.sub(r"\d+(\.\d+)?\s?(s|min)\b", "T", "\n".join(lines))  # "Prepared in 2 s."


def compare_trees(ref: Path, got: Path, atol: float = 0.0) -> tuple[list[str], int, float]:
    """-> (differences, files compared, largest absolute difference of any tensor)."""
    import mlx_pn  # noqa: F401
    import mlx.core as mx
    import numpy as np

    outs = (str(ref), str(got))
    rel = lambda root: {str(p.relative_to(root)) for p in _visible_files(root) if p.name not in IGNORED_FILES}  # noqa: E731
    a, b = rel(ref), rel(got)
    diffs = [f"only in the uninterrupted run: {x}" for x in sorted(a - b)]
    diffs += [f"only in the killed run: {x}" for x in sorted(b - a)]
    worst = 0.0
    for name in sorted(a & b):
        fa, fb = ref / name, got / name
        if fa.read_bytes() == fb.read_bytes():
            continue
        if fa.suffix == ".safetensors":
            ta, tb = mx.load(str(fa)), mx.load(str(fb))
            if set(ta) != set(tb):
                diffs.append(f"{name}: different tensors")
                continue
            for k in ta:
                x, y = np.array(ta[k].astype(mx.float32)), np.array(tb[k].astype(mx.float32))
                d = float(np.abs(x - y).max()) if x.size else 0.0
                worst = max(worst, d)
                if x.shape != y.shape or d > atol:
                    diffs.append(f"{name}:{k} differs (max abs {d:.3g})")
        elif fa.suffix == ".json":
            ja, jb = _normalize(json.loads(fa.read_text()), outs), _normalize(json.loads(fb.read_text()), outs)
            if ja != jb:
                keys = sorted(k for k in ja.keys() | jb.keys() if ja.get(k) != jb.get(k)) if isinstance(ja, dict) \
                    and isinstance(jb, dict) else []
                diffs.append(f"{name}: content differs" + "".join(
                    f"; {k}: {str(ja.get(k))[:60]} vs {str(jb.get(k))[:60]}" for k in keys[:4]))
        elif fa.suffix == ".jsonl":
            la = [_normalize(json.loads(x), outs) for x in fa.read_text().splitlines() if x.strip()]
            lb = [_normalize(json.loads(x), outs) for x in fb.read_text().splitlines() if x.strip()]
            if la != lb:
                diffs.append(f"{name}: {len(la)} vs {len(lb)} rows, first difference at row "
                             f"{next((i for i, (p, q) in enumerate(zip(la, lb)) if p != q), min(len(la), len(lb)))}")
        elif fa.suffix in (".md", ".txt"):
            if _mask_text(fa.read_text(), outs) != _mask_text(fb.read_text(), outs):
                diffs.append(f"{name}: text differs")
        else:
            diffs.append(f"{name}: bytes differ")
    return diffs, len(a & b), worst


def _state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file (temporary ones too) -> (size, mtime): did a launch write anything?"""
    out = {}
    for p in root.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------------------------
# One stage


def run_stage(name: str, command: str, ref: Path, kill: Path, logs: Path, kills: int, rng: random.Random,
              mode: str = "time", atol: float = 0.0, log=print, sig: int = signal.SIGKILL) -> StageReport:
    r = StageReport(name)
    logs.mkdir(parents=True, exist_ok=True)
    rc, r.ref_s, out = launch(_argv(command, ref), logs / f"{name}-ref.log")
    if rc != 0:
        r.problems.append(f"the uninterrupted run failed (exit {rc}): {out[-2000:]}")
        return r
    snap = logs.parent / f"snapshot-{name}"
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(ref, snap, symlinks=True)
    rc, r.startup_s, out = launch(_argv(command, ref), logs / f"{name}-ref-rerun.log")
    if rc != 0:
        r.problems.append(f"re-running the finished stage failed (exit {rc}): {out[-2000:]}")
    changed, _, _ = compare_trees(snap, ref)
    shutil.rmtree(snap, ignore_errors=True)
    if changed:
        r.rerun_unchanged = False
        r.problems += [f"re-running the finished stage changed a file: {c}" for c in changed]
    if mode == "concurrent":
        _run_concurrent(r, command, ref, kill, logs / name, kills, rng, atol)
        return r
    attempts = 1
    points = [f"{c}{p}" for c in range(1, 1000) for p in ("", "+")]
    while True:
        r.launches += 1
        log_path = logs / f"{name}-kill-{r.launches:03d}.log"
        if r.launches > 4 * kills + 10:
            r.problems.append(f"did not finish after {r.launches - 1} launches")
            break
        last = r.kills >= kills
        state_before = _state(kill)
        if mode == "writes" and not last:
            point = points[r.kills]
            rc, t, out = launch(_argv(command, kill), log_path, env=_env({"MLX_PN_CRASH_AT_WRITE": point}))
            killed = rc == -signal.SIGKILL
            if killed:
                r.crash_points.append(point)
        else:
            delay = None if last else rng.uniform(0.1, 0.9) * r.ref_s
            rc, t, out = launch(_argv(command, kill), log_path, kill_after=delay, sig=sig, codes=r.exit_codes)
            killed = rc is None
        r.resumed_from_checkpoint += out.count("resuming from")
        if killed:
            r.kills += 1
            if _state(kill) == state_before:
                r.startup_kills += 1  # killed before it wrote anything
            r.temps_seen += len(temp_leftovers(kill))
            for p in check_complete(kill):
                r.problems.append(f"after kill {r.kills}: {p}")
            continue
        if rc != 0:
            r.problems.append(f"launch {r.launches} failed (exit {rc}): {out[-2000:]}")
            break
        if r.kills >= kills:
            break
        # finished before enough kills: check this attempt, then start over from the previous stages' outputs
        _check_finished(r, ref, kill, atol, f"attempt {attempts}: ")
        attempts += 1
        shutil.rmtree(kill)
        shutil.copytree(logs.parent / f"base-{name}", kill, symlinks=True)
    _check_finished(r, ref, kill, atol, f"attempt {attempts}: " if attempts > 1 else "")
    r.attempts = attempts
    return r


LOCKED = re.compile(r"^error: pid \d+ is writing .+ since .+ \(command: .+\)", re.M)


def _run_concurrent(r: StageReport, command: str, ref: Path, kill: Path, logs: Path, rounds: int,
                    rng: random.Random, atol: float) -> None:
    """`rounds` times: launch A, then B on the same folder after a seeded delay in [0, 0.5 (T - S)] (within the
    first half of A's work after its start-up S, so that B meets A's lock rather than a finished run, however
    small the training share of T is); each must exit 0 or stop with the run lock's line; then one more launch
    finishes, and the outputs equal the reference. Each round starts again from the previous stages' outputs."""
    logs.mkdir(parents=True, exist_ok=True)
    base = logs.parent.parent / f"base-{r.name}"
    for i in range(1, max(rounds, 1) + 1):
        if i > 1:
            shutil.rmtree(kill)
            shutil.copytree(base, kill, symlinks=True)
        fa, fb = open(logs / f"a-{i:03d}.log", "wb"), open(logs / f"b-{i:03d}.log", "wb")
        a = subprocess.Popen(_argv(command, kill), cwd=REPO, stdout=fa, stderr=subprocess.STDOUT, env=_env(),
                             start_new_session=True)
        time.sleep(rng.uniform(0.0, 0.5) * max(r.ref_s - r.startup_s, 0.0))
        b = subprocess.Popen(_argv(command, kill), cwd=REPO, stdout=fb, stderr=subprocess.STDOUT, env=_env(),
                             start_new_session=True)
        codes = [p.wait(timeout=600) for p in (a, b)]
        fa.close(), fb.close()
        r.launches += 2
        for who, rc in zip("ab", codes):
            out = (logs / f"{who}-{i:03d}.log").read_text(errors="replace")
            if rc == 2 and LOCKED.search(out) and "Traceback" not in out:
                r.lock_refusals += 1
            elif rc != 0:
                r.problems.append(f"round {i}, launch {who.upper()}: exit {rc} without the run lock's line: "
                                  f"{out[-1500:]}")
        rc, _, out = launch(_argv(command, kill), logs / f"after-{i:03d}.log")
        r.launches += 1
        if rc != 0:
            r.problems.append(f"round {i}: the launch after both failed (exit {rc}): {out[-1500:]}")
        _check_finished(r, ref, kill, atol, f"round {i}: ")
    r.attempts = max(rounds, 1)


def _check_finished(r: StageReport, ref: Path, kill: Path, atol: float, where: str) -> None:
    left = temp_leftovers(kill)
    if left:
        r.problems.append(f"{where}temporary files left after the stage finished: " + ", ".join(map(str, left)))
    diffs, n, worst = compare_trees(ref, kill, atol)
    r.compared_files += n
    r.max_abs_diff = max(r.max_abs_diff, worst)
    r.problems += [f"{where}differs from the uninterrupted run: {d}" for d in diffs]


def run(stages: dict[str, str], work: Path, kills: int = 10, seed: int = 0, mode: str = "time",
        atol: float = 0.0, log=print, sig: int = signal.SIGKILL) -> list[StageReport]:
    """Every stage in order, reference in WORK/ref, killed run in WORK/kill -> reports."""
    ref, kill, logs = work / "ref", work / "kill", work / "logs"
    for p in (ref, kill):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    rng = random.Random(seed)
    reports = []
    for name, command in stages.items():
        base = work / f"base-{name}"
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(kill, base, symlinks=True)  # the killed run's state before this stage (writes mode)
        t0 = time.perf_counter()
        r = run_stage(name, command, ref, kill, logs, kills, rng, mode, atol, log, sig)
        shutil.rmtree(base, ignore_errors=True)
        log(f"[killtest] {name}: {r.kills} kills, {r.launches} launches, {r.resumed_from_checkpoint} resumed from a "
            f"checkpoint, {r.lock_refusals} refused by the run lock, "
            f"{'OK' if r.ok else f'{len(r.problems)} PROBLEMS'} ({time.perf_counter() - t0:.0f} s)")
        reports.append(r)
    return reports


def format_report(reports: list[StageReport], seed: int, mode: str) -> str:
    lines = [f"# Kill test (mode {mode}, seed {seed})", "",
             "| stage | kills | launches | attempts | resumed from checkpoint | kills before any write | "
             "temp files seen | files compared | max abs diff | result |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in reports:
        lines.append(f"| {r.name} | {r.kills} | {r.launches} | {r.attempts} | {r.resumed_from_checkpoint} | {r.startup_kills} | "
                     f"{r.temps_seen} | {r.compared_files} | {r.max_abs_diff:.3g} | "
                     f"{'identical to the uninterrupted run' if r.ok else 'FAILED'} |")
    lines += ["", "Uninterrupted run / start-up (s): "
              + ", ".join(f"{r.name} {r.ref_s:.1f}/{r.startup_s:.1f}" for r in reports)]
    for r in reports:
        if r.exit_codes:
            lines.append(f"{r.name} exit codes of the signalled launches: {' '.join(map(str, r.exit_codes))}")
        if mode == "concurrent":
            lines.append(f"{r.name}: {r.attempts} rounds of two launches at once, {r.lock_refusals} stopped by the run "
                         f"lock, the rest finished")
        if r.crash_points:
            lines.append(f"{r.name} crash points (write number, + = after the rename): {' '.join(r.crash_points)}")
        for p in r.problems:
            lines.append(f"- {r.name}: {p}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="kills per stage (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--mode", choices=["time", "writes", "concurrent"], default="time",
                   help="time: a signal after a random delay; writes: the process kills itself at a durable write; "
                        "concurrent: a second launch on the same folder while the first runs (--kills rounds)")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL",
                   help="time mode: the signal sent (TERM: SIGKILL 30 s later if still running)")
    p.add_argument("--stage", action="append", default=None, help="run only these stages (repeatable); a stage reading an earlier one's outputs needs it listed too")
    p.add_argument("--add", action="append", default=[], metavar="NAME=COMMAND",
                   help="another stage: a command line with {out} for the output folder")
    p.add_argument("--work", default="runs/killtest", help="scratch folder (deleted and rewritten)")
    p.add_argument("--atol", type=float, default=0.0, help="tolerated absolute difference of weights (default 0)")
    a = p.parse_args(argv)
    stages = dict(STAGES) | (EXTRA if a.stage and set(a.stage) & set(EXTRA) else {})
    for spec in a.add:
        name, _, cmd = spec.partition("=")
        stages[name.strip()] = cmd.strip()
    if a.stage:
        unknown = set(a.stage) - set(stages)
        if unknown:
            p.error(f"unknown stage {', '.join(sorted(unknown))}; have {', '.join(stages)}")
        stages = {k: v for k, v in stages.items() if k in a.stage}
    work = Path(a.work)
    reports = run(stages, work, a.kills, a.seed, a.mode, a.atol, sig=getattr(signal, f"SIG{a.signal}"))
    text = format_report(reports, a.seed, a.mode)
    (work / "report.md").write_text(text)
    print(text)
    raise SystemExit(0 if all(r.ok for r in reports) else 1)


if __name__ == "__main__":
    main()
