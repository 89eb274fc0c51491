"""One writer per stage folder: an exclusive lock file ``FOLDER/.lock`` (fcntl.flock) holding the writer's pid,
command line and start time.

A second process on the same folder stops at once with one line ("pid N is writing OUT/pretrain since T
(command ...)"), instead of resuming from the first one's checkpoints and interleaving its metrics. The lock
is the kernel's: it goes away with its process however that process ends (kill -9 included), so a lock file
whose holder is gone is simply taken over, with a line saying so. The file itself stays (emptied on a clean
exit): deleting it would let two processes lock two different files of the same name.

Locks are re-entrant within one process (a stage holds its folder while the loop inside it takes the same
lock), keyed by the folder's resolved path. Under data parallelism only rank 0 takes them (the callers
decide: the others write nothing).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from mlx_pn.io import _alive

LOCK = ".lock"
_held: dict[Path, list] = {}  # resolved folder -> [open file, depth]


class RunLockError(RuntimeError):
    """Another live process is writing this folder; the message names it."""


def _holder(text: str) -> dict:
    try:
        d = json.loads(text)
        return d if isinstance(d, dict) else {}
    except ValueError:
        return {}


def _describe(folder: Path, h: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if "started" in h else "an unknown time"
    return f"pid {h.get('pid', '?')} is writing {folder} since {since} (command: {h.get('command', '?')})"


def _writer(f) -> dict | None:
    """Who holds the lock file `f` exclusively: its holder record, or None when only readers hold it (a shared
    lock can still be taken). A writer that has just taken the lock may not have written its record yet: wait for
    it a little, then name what is known."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None
    except OSError:
        pass
    for _ in range(20):
        f.seek(0)
        h = _holder(f.read())
        if h.get("pid"):
            return h
        time.sleep(0.05)
    return {}


def acquire(folder: str | Path, log=print) -> None:
    """Take FOLDER/.lock (creating FOLDER); RunLockError when another live process holds it."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        h = _writer(f)
        f.close()
        if h is None:  # no writer: readers (`reading`) hold it, for seconds
            raise RunLockError(f"another process is reading {folder} (a specialization loading its model from it); "
                               f"wait a moment and rerun") from None
        raise RunLockError(f"{_describe(folder, h)}; wait for it to finish or stop it (kill {h.get('pid', 'PID')}), "
                           f"or use another --out") from None
    f.seek(0)
    old = _holder(f.read())
    if old.get("pid") and old.get("pid") != os.getpid():
        state = "no longer running" if not _alive(int(old["pid"])) else "its lock released"
        log(f"[lock] taking over {folder / LOCK} from pid {old['pid']} ({state}; {_describe(folder, old)})")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "command": " ".join([Path(sys.executable).name] + sys.argv),
                        "started": time.time()}))
    f.flush()
    _held[key] = [f, 1]


def release(folder: str | Path) -> None:
    key = Path(folder).resolve()
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    f = entry[0]
    del _held[key]
    try:
        f.seek(0)
        f.truncate()  # a clean exit: nobody to report
    except OSError:
        pass
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()


@contextmanager
def hold(folder: str | Path, log=print, enabled: bool = True):
    """`with hold(out):` the folder is this process's until the block ends (enabled=False: a no-op, for the
    ranks other than 0)."""
    if not enabled:
        yield
        return
    acquire(folder, log)
    try:
        yield
    finally:
        release(folder)


@contextmanager
def reading(folder: str | Path, enabled: bool = True):
    """`with reading(stage):` no writer starts on `stage` (and none is running) while the block reads from it, e.g. a
    specialization hashing and loading its pretrained model. A shared lock on the same file: any number of readers
    at once, and this process's own lock on it (it writes the folder itself) suffices. A folder without a lock file
    (not one this library trains in) is read as it is."""
    folder = Path(folder)
    path = folder / LOCK
    if not enabled or folder.resolve() in _held or not path.is_file():
        yield
        return
    f = open(path)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        h = _holder(f.read())
        f.close()
        raise RunLockError(f"{_describe(folder, h)}; wait for it to finish, then rerun") from None
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def set_aside(folder: str | Path, names: tuple[str, ...] | None = None, log=print) -> Path | None:
    """--no-resume: move a previous run's files out of `folder` into FOLDER.old-YYYYmmdd-HHMMSS beside it (all
    entries but the lock and temporaries, or only `names`), so that its checkpoints are never resumed later
    and nothing is deleted. -> the new folder, None when there was nothing to move."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    entries = sorted(p for p in folder.iterdir() if p.name != LOCK and not p.name.startswith(".")
                     and (names is None or p.name in names))
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder.parent / f"{folder.name}.old-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = folder.parent / f"{folder.name}.old-{stamp}-{n}"
    dest.mkdir()
    for p in entries:
        os.replace(p, dest / p.name)
    log(f"[--no-resume] moved the previous run in {folder} aside to {dest}")
    return dest
