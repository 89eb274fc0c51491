"""A training stage is a value; `run_stage` runs one, and is the only code that keeps a run folder's books.

A method (mlx_pn.methods) describes what to train as a `Stage`: where it writes, how to build its model and
batches, what it validates on, its loss and TrainConfig, the fingerprint keys of its own, and how to cost it.
`run_stage` does the rest, the same way for every method: the "already done" test (one fingerprint: the
loop's, without the step count), the loop (which holds the folder's lock and sets an old run aside on
--no-resume), and summary.json with the stage's cost, written once by rank 0. `run_specialize` does the same for a
specialization's results.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlx_pn import runlock
from mlx_pn.config import TrainConfig
from mlx_pn.costs import StageCost
from mlx_pn.fingerprint import check_same
from mlx_pn.io import write_json_atomic
from mlx_pn.train import distributed as dist
from mlx_pn.train import loop
from mlx_pn.train.loop import RunOptions, run_fingerprint
from mlx_pn.train.state import TrainResult
from mlx_pn.train.losses import cross_entropy


def _nothing(*_a) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    """One training run of a method, described, not run.

    model() -> the freshly initialised model; batches() -> its training batch source; valid() -> (validation
    tokens or windows, their cluster labels), either may be None; cost(model, result) -> the StageCost written
    in summary.json; before(model, batches, log) logs what is about to be trained and returns summary extras known
    before training; after(model) -> summary extras measured after it; extra_config(model) -> the keys saved
    with the model's config; fingerprint: keys of the method's own that the result depends on."""

    out: Path
    desc: str
    t: TrainConfig
    model: Callable[[], Any]
    batches: Callable[[], Any]
    cost: Callable[[Any, TrainResult], StageCost]
    valid: Callable[[], tuple] = lambda: (None, None)
    loss_fn: Callable = cross_entropy
    before: Callable[[Any, Any, Callable], dict] = _nothing
    after: Callable[[Any], dict] = _nothing
    extra_config: Callable[[Any], dict | None] = lambda model: None
    fingerprint: dict = field(default_factory=dict)
    group: Any = None  # the loop's `group` (dist.SOLO: one slm-mix expert per rank)


def run_stage(stage: Stage, resume: bool = True, log=print) -> dict:
    """Train `stage` unless it has already finished with the same fingerprint -> its summary.json contents."""
    model, batches = stage.model(), stage.batches()
    valid, labels = stage.valid()
    fp = run_fingerprint(model, stage.t, batches, valid, labels, stage.fingerprint)
    # the steps are compared by finished() itself (a run's summary records the steps it planned)
    done = finished(stage.out, stage.t.steps, resume, log, stage.desc,
                    {k: v for k, v in fp.items() if k != "train.steps"})
    if done:
        return done
    extras = stage.before(model, batches, log) or {}
    run = RunOptions(valid_tokens=valid, valid_labels=labels, loss_fn=stage.loss_fn, desc=stage.desc,
                     extra_config=stage.extra_config(model), fingerprint=stage.fingerprint or None, resume=resume,
                     group=stage.group)
    r = loop.train(model, stage.t, batches, stage.out, run, log=log)
    return write_summary(stage.out, r, stage.cost(model, r), group=stage.group, **(stage.after(model) | extras))


def finished(out: Path, steps: int, resume: bool, log, what: str, fingerprint: dict | None = None) -> dict | None:
    """The summary of a stage that already ran `steps` steps to the end, else None. fingerprint: what this
    command would train (run_fingerprint without train.steps); a finished run made with other values of those
    keys is a StaleRunError, not "already done"."""
    summary = out / "summary.json"
    if resume and summary.exists() and (out / "final" / "model.safetensors").exists():
        s = json.loads(summary.read_text())
        # "cost" is written with the summary once the stage is complete: without it the stage was killed
        # before its end (resuming from the final checkpoint writes both)
        if (s.get("steps") == steps or s.get("planned_steps") == steps) and "cost" in s:
            if fingerprint is not None:
                check_same(s.get("fingerprint"), fingerprint, f"[{what}] {out}")
            log(f"[{what}] already done ({out}); delete it to retrain")
            return s
    return None


def write_summary(out: Path, result, cost: StageCost | None = None, group=None, **extra) -> dict:
    """OUT/.../summary.json of one training run: the loop's result, then the stage's cost and extras.
    Written by the rank that wrote the run (rank 0 of `group`, the train() argument)."""
    summary = result.summary() | {"fingerprint": getattr(result, "fingerprint", {})}
    if cost is not None:
        summary.update(cost=cost.as_dict(), **extra)
    if dist.resolve(group)[1] == 0:
        write_json_atomic(out / "summary.json", summary)
    return summary


def parts_done(folders: list[Path]) -> list[dict]:
    """The summaries of the runs among `folders` that finished (summary.json and final/model.safetensors)."""
    return [json.loads((f / "summary.json").read_text()) for f in folders
            if (f / "summary.json").exists() and (f / "final" / "model.safetensors").exists()]


def write_group_summary(root: Path, summary: dict, complete: bool) -> dict:
    """summary.json of a stage made of independent runs (slm-mix's experts), written by rank 0 once every run
    is `complete` (the "cost" it carries makes it "already done")."""
    if complete and dist.is_main():
        write_json_atomic(root / "summary.json", summary)
    return summary


def run_specialize(out: Path, resume: bool, log, what: str, fingerprint_of: Callable[[dict], dict],
                   run: Callable[[], dict]) -> dict:
    """A specialization's results.json under the folder's lock: the old one when it is already done (and its
    fingerprint_of(results) still holds), else run() -> results, written once by rank 0 with that fingerprint."""
    main = dist.is_main()
    with runlock.hold(out, log, enabled=main):  # one writer per specialization folder
        results_path = out / "results.json"
        if resume and results_path.exists():
            old = json.loads(results_path.read_text())
            # stale when the config, the domain's shards or the parent model changed since
            check_same(old.get("fingerprint"), fingerprint_of(old), f"{what}: {out}")
            log(f"{what}: already done ({results_path}); delete {results_path.parent} to redo")
            return old
        # --no-resume: the loop moves the old run's files aside (once this stage's model is built and checked)
        results = run()
        # written here, once and with its fingerprint: a results.json never lacks what "already done" compares.
        # results["read"]: hashes taken when the inputs were loaded (the parent's weights), which win over the
        # files as they are now: a `pretrain --no-resume` may have replaced the parent meanwhile
        read = results.pop("read", {})
        now = fingerprint_of(results)
        changed = [k for k, v in read.items() if k in now and now[k] != v]
        if changed:
            log(f"{what}: {', '.join(changed)} changed on disk while this ran (another command replaced it); "
                f"results.json records what training started from, and the next run will say it is stale")
        results["fingerprint"] = now | read
        if main:
            write_json_atomic(results_path, results)
        return results
