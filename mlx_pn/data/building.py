"""One builder at a time for a resumable build (an index's DATA/index/.NAME.building, a shard set's
DATA/shards/.NAME.parts): unlike a temp folder of its own, such a folder is shared by every process that builds the
same corpus, so two prepares on one data folder (two launches, or two runs with the same data.dir) would append to
the same files. The second waits on the kernel's lock (fcntl.flock: released however its holder ends, kill -9
included), then finds the work done or resumes it."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock: Path, log=print, what: str = ""):
    """Hold `lock` (a dot-file beside the build folder, kept: deleting it would let two processes lock two files
    of the same name) for the duration; wait, saying so once, while another process holds it."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[data] another process is building {what or lock.parent}; waiting for it ({lock})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
