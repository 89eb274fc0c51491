"""Checkpoints you can trust: written to a temp folder, fsynced, renamed; hashes checked on load.

A checkpoint folder ``step_0000100/`` holds ``model.safetensors``, ``optimizer.safetensors`` and
``state.json`` (step, trainer state, sha256 of both files). A damaged or
truncated checkpoint is reported and the previous good one is used. Plain model folders (config.json +
model.safetensors: ``final/``, ``best/``) are mlx_pn.models.build's save_model / load_model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from mlx_pn.io import atomic_folder, check_disk_space, file_sha256, remove_tree
from mlx_pn.models.build import CheckpointError


FILES = ("model.safetensors", "optimizer.safetensors")  # what state.json's sha256 map must cover
CHECKPOINT = "checkpoint"  # the marker kind of a checkpoint folder (mlx_pn.io.write_marker)


def _legacy(folder: Path) -> bool:
    """A checkpoint written before folders carried markers."""
    return (folder / "state.json").exists()


def save_checkpoint(root: Path, step: int, model, optimizer, trainer_state: dict, keep: int = 2,
                    fingerprint: dict | None = None) -> Path:
    def write(tmp: Path):
        # sorted keys: a resumed run writes byte-identical files (a restored optimizer state is ordered
        # differently from a fresh one), so equal checkpoints have equal hashes
        need = sum(v.nbytes for _, v in tree_flatten(model.parameters())) + sum(
            v.nbytes for _, v in tree_flatten(optimizer.state) if hasattr(v, "nbytes"))
        check_disk_space(root, need + (1 << 20), f"checkpoint {name}", "free some space or lower "
                         "train.keep_checkpoints / point --out at a disk with room, then rerun the same command")
        mx.save_safetensors(str(tmp / "model.safetensors"), dict(sorted(tree_flatten(model.parameters()))))
        opt = dict(sorted(tree_flatten(optimizer.state)))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        state = {"step": step, "trainer": trainer_state,
                 "sha256": {f: file_sha256(tmp / f) for f in FILES}, "fingerprint": fingerprint or {}}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        # Prune the older checkpoints to keep - 1 *before* the new one appears, so that a crash right after
        # the rename leaves exactly `keep` (a run that resumes at its last step never saves, so never prunes)
        _prune(root, max(keep - 1, 1), before=name)

    name = f"step_{step:07d}"
    path = atomic_folder(root / name, write, kind=CHECKPOINT, legacy=_legacy)
    _prune(root, keep)
    return path


def _prune(root: Path, keep: int, before: str | None = None) -> None:
    """Delete all but the newest `keep` checkpoints (among those older than `before`, when given)."""
    if keep <= 0:
        return
    ckpts = [p for p in list_checkpoints(root) if before is None or p.name < before]
    for old in ckpts[:-keep]:
        remove_tree(old, CHECKPOINT, _legacy)  # renamed away first: a kill mid-deletion leaves no half-deleted one


def list_checkpoints(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify_checkpoint(path: Path) -> dict:
    """-> state.json contents; raises CheckpointError when a file is missing or its hash differs."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}/state.json unreadable ({e})") from None
    sha = state.get("sha256") if isinstance(state, dict) else None
    if not isinstance(sha, dict) or not set(FILES) <= set(sha):
        raise CheckpointError(f"{path}/state.json has no sha256 of {' and '.join(FILES)}: not trusted")
    if state.get("step") != _folder_step(path) or not isinstance(state.get("trainer"), dict):
        raise CheckpointError(f"{path}/state.json says step {state.get('step')!r} in a folder named {path.name} "
                              f"(or has no trainer state): edited or damaged, not trusted")
    for name, digest in sha.items():
        if not (path / name).exists() or file_sha256(path / name) != digest:
            raise CheckpointError(f"{path}/{name} is missing or corrupted (sha256 mismatch)")
    return state


def _folder_step(path: Path) -> int | None:
    try:
        return int(path.name[len("step_"):])
    except ValueError:
        return None


def latest_good_checkpoint(root: Path) -> tuple[Path, dict] | None:
    """Newest checkpoint whose hashes check out; damaged ones are reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", RuntimeWarning, stacklevel=2)
    return None


def restore_checkpoint(path: Path, model, optimizer) -> None:
    try:
        model.load_weights(str(path / "model.safetensors"), strict=True)
    except ValueError as e:  # another architecture wrote this run folder
        raise CheckpointError(f"{path} was written by a model of another shape or kind than this config builds "
                              f"({str(e).splitlines()[0][:160]}); use another --out, or delete {path.parent.parent} "
                              f"to train this config from scratch") from None
    opt = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt.items()))
    mx.eval(model.parameters(), optimizer.state)
