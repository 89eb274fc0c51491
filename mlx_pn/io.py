"""Durable writes: nothing half-written is ever visible under its final name.

Files and folders are written under a temporary name in the same directory, fsynced, then renamed
(an atomic operation on POSIX file systems), so a crash leaves either the old or the new version.

Temporary names are ``.NAME.tmp-PID-RANDOM``: a process killed mid-write (kill -9, power loss) leaves
one behind, and the next durable write into the same folder removes those whose process is gone, so
leftovers never pile up and are never mistaken for outputs (every reader ignores dot-names).
Replacing an existing folder swaps old and new in one step where the OS can (Linux renameat2
RENAME_EXCHANGE, macOS renamex_np RENAME_SWAP), so the folder is never absent either.

``MLX_PN_CRASH_AT_WRITE=N`` (tests only) kills the process with SIGKILL at the N-th durable write of
the process, just before its rename (``N``) or just after it (``N+``): tools/killtest.py uses it to
put crashes exactly at each write boundary.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable

_TMP = re.compile(r"^\..+\.(tmp|old)-(\d+)-[^/]*$")
_writes = 0


class WriteError(OSError):
    """An output cannot be written (disk full, a read-only or not-writable folder); the message names the folder,
    its free space and the fix."""


class DiskSpaceError(WriteError):
    """Not enough free disk space for an output; the message names the folder, the sizes and the fix."""


class ForeignFolderError(ValueError):
    """A folder about to be replaced or deleted does not carry this library's marker of the expected kind."""


MARKER = ".mlx-pn.json"  # {"kind": KIND}: what a folder this library made is (a dot-name: readers skip it)


def write_marker(folder: str | Path, kind: str) -> Path:
    """Mark `folder` as this library's output of `kind` (a run, a shard set, an export, ...)."""
    path = Path(folder) / MARKER
    path.write_text(json.dumps({"kind": kind}))
    return path


def has_marker(folder: str | Path, kind: str) -> bool:
    """True when `folder` carries the marker of `kind` (write_marker)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def check_replaceable(folder: str | Path, kind: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """Raise ForeignFolderError unless `folder` is absent, empty or this library's `kind` folder: it carries the
    marker, or (made before markers existed) `legacy(folder)` recognises it."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and (has_marker(folder, kind) or (legacy and legacy(folder))
                                                         or not any(folder.iterdir())):  # empty: nothing to lose
        return
    raise ForeignFolderError(f"{folder} exists and is not a {kind} folder made by mlx_pn (no {MARKER} of kind "
                             f"'{kind}'); refusing to replace or delete it: move it away, or choose another output "
                             f"folder")


RUN = "run"  # the marker kind of an output folder a command claimed (--out, data.dir): claim_output
_PACKAGE = Path(__file__).resolve().parent  # the installed library: never an output folder
_TRACES = (MARKER, ".lock")  # what this library leaves in every stage folder it writes (markers, run locks)


def _library_made(folder: Path, depth: int = 2) -> bool:
    """A folder written before output folders were marked: a marker or a run lock of this library in it or up to
    `depth` levels below (a user's own folder, however its files are named, has neither)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    if any(e.name in _TRACES for e in entries):
        return True
    return depth > 0 and any(e.is_dir(follow_symlinks=False) and _library_made(Path(e.path), depth - 1)
                             for e in entries if not e.name.startswith("."))


def claim_output(folder: str | Path, flag: str = "--out") -> Path:
    """Make `folder` (given by `flag`) this command's output folder, before anything is written under it: refused
    (ForeignFolderError, one line) when it is a file, inside the installed library, a path too long for the file
    system, or an existing folder this library did not make (not empty, no marker of kind 'run' and no trace of an
    earlier run): a user's own `pretrain/summary.json` is never replaced, `--out /` writes nothing. Otherwise the
    folder is created if need be and marked."""
    folder = Path(folder).expanduser()
    raw = os.fsencode(str(folder.absolute()))
    if len(raw) > 4000 or any(len(part) > 255 for part in raw.split(b"/")):
        raise ForeignFolderError(f"{flag} {str(folder)[:80]}...: the path is too long for the file system "
                                 f"({len(raw)} bytes; at most 4096 in all and 255 a name); choose a shorter one")
    resolved = folder.resolve()
    if resolved == _PACKAGE or _PACKAGE in resolved.parents:
        raise ForeignFolderError(f"{flag} {folder} is inside the installed mlx_pn package ({_PACKAGE}); outputs "
                                 f"there would be lost on reinstall and could shadow its files: choose a folder "
                                 f"outside it, e.g. runs/NAME")
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        where = "the file system root" if resolved == Path(resolved.anchor) else "your home folder"
        raise ForeignFolderError(f"{flag} {folder} is {where}; the run writes data/, pretrain/ ... into it: pick a "
                                 f"folder of its own, e.g. runs/mine")
    if folder.exists() and not folder.is_dir():
        raise ForeignFolderError(f"{flag} {folder} is a file, not a folder; choose a folder (it is created if "
                                 f"missing)")
    if folder.is_dir() and not has_marker(folder, RUN):
        if any(folder.iterdir()) and not _library_made(folder):
            raise ForeignFolderError(f"{flag} {folder} holds files this library did not write (no {MARKER}); "
                                     f"refusing to write into it: choose a new or empty folder, e.g. "
                                     f"{flag} {folder / 'mlx-pn-run'}")
    with writing(folder.parent if folder.parent.exists() else None):
        folder.mkdir(parents=True, exist_ok=True)
        if not has_marker(folder, RUN):
            write_marker(folder, RUN)
    return folder


def check_inside(path: str | Path, root: str | Path, what: str) -> Path:
    """`path` resolved; a ForeignFolderError when it falls outside `root` (a name with '..' or '/' in it)."""
    p, r = Path(path).resolve(), Path(root).resolve()
    if p != r and r not in p.parents:
        raise ForeignFolderError(f"{what}: {path} resolves to {p}, outside {r}; use a plain name (no '/', '..')")
    return p


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def stale_temps(folder: str | Path) -> list[Path]:
    """Temporary files/folders in `folder` left by processes that no longer run."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for n in names:
        m = _TMP.match(n)
        if m and not _alive(int(m.group(2))):
            out.append(folder / n)
    return sorted(out)


def sweep_stale_temps(folder: str | Path) -> list[Path]:
    """Remove what `stale_temps` finds; returns the removed paths."""
    removed = stale_temps(folder)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass
    return removed


def _tmp_prefix(path: Path, kind: str = "tmp") -> str:
    return f".{path.name}.{kind}-{os.getpid()}-"


def _crash_point(write_no: int, after: bool) -> None:
    """The MLX_PN_CRASH_AT_WRITE test hook (see the module docstring). write_no: the number _begin gave this write,
    not the running count: writes nested in a folder's write (its files) advance the count before the folder's own
    rename, which a check of the count would then never reach."""
    spec = os.environ.get("MLX_PN_CRASH_AT_WRITE")
    if not spec:
        return
    n, plus = int(spec.rstrip("+")), spec.endswith("+")
    if write_no == n and plus == after:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _begin(parent: Path) -> int:
    """Before a durable write into `parent`: the folder made, stale temporaries swept -> this write's number."""
    global _writes
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(parent)
    _writes += 1
    return _writes


_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)
_LONG = (errno.ENAMETOOLONG,)


def free_mb(folder: str | Path) -> float | None:
    """Free space (MB) of the disk that holds `folder` (its nearest existing parent); None if unknown."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free / 1e6
    except OSError:
        return None


def write_error(e: BaseException, folder: str | Path | None) -> WriteError | None:
    """An error raised while writing under `folder` -> one WriteError line naming the folder, its free space and the
    fix, when it is a full disk (ENOSPC/EDQUOT, or MLX's `RuntimeError: [write] Unable to write N bytes to file.`,
    which names neither the file nor the cause) or a read-only / not-writable folder (EROFS/EACCES/EPERM); None
    for any other error."""
    if isinstance(e, WriteError) or not isinstance(e, (OSError, RuntimeError)):
        return None
    text = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    mlx_full = isinstance(e, RuntimeError) and ("Unable to write" in text or "No space left" in text)
    if isinstance(e, OSError) and e.filename and folder is None:
        folder = Path(e.filename).parent
    where = str(folder) if folder is not None else "an output folder (MLX does not say which)"
    free = free_mb(folder) if folder is not None else None
    left = f"{free:,.1f} MB free" if free is not None else "free space unknown"
    if mlx_full or (isinstance(e, OSError) and e.errno in _FULL):
        return DiskSpaceError(f"disk full while writing {where}: {left} ({text}); free some space or point --out / "
                              f"data.dir at a disk with room, then rerun the same command (finished parts are kept)")
    if isinstance(e, OSError) and e.errno in _LONG:
        name = str(e.filename or where)
        return WriteError(f"cannot write {name[:100]}{'...' if len(name) > 100 else ''}: the name is too long for "
                          f"the file system (at most 255 bytes a name, 4096 a path); use a shorter --out or a "
                          f"shorter name (e.g. a domain's)")
    if isinstance(e, OSError) and e.errno in _DENIED:
        return WriteError(f"cannot write {e.filename or where}: {e.strerror or text} ({left}); make {where} writable "
                          f"or choose another --out")
    return None


@contextlib.contextmanager
def writing(folder: str | Path | None):
    """Turn a full disk or a read-only folder under `folder` into one WriteError line (write_error)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        err = write_error(e, folder)
        if err is None:
            raise
        raise err from e


def atomic_file(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Run write(binary_file) on a temp file beside `path`, fsync it, then rename it to `path` (a full disk or a
    read-only folder: one WriteError line)."""
    with writing(Path(path).parent):
        return _atomic_file(path, write)


def _atomic_file(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    path = Path(path)
    write_no = _begin(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are ordinary outputs
        _crash_point(write_no, after=False)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _crash_point(write_no, after=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json_atomic(path: str | Path, obj) -> None:
    atomic_file(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def write_text_atomic(path: str | Path, text: str) -> None:
    atomic_file(path, lambda f: f.write(text.encode("utf-8")))


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when the OS offers no way to (then the caller renames)."""
    try:
        libc = _libc()
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            AT_FDCWD, RENAME_EXCHANGE = -100, 2
            rc = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
        elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            RENAME_SWAP = 0x2
            rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), RENAME_SWAP)
        else:
            return False
    except (OSError, AttributeError, TypeError):
        return False
    return rc == 0  # EINVAL/ENOSYS (e.g. a file system without it): fall back


def atomic_folder(dest: str | Path, write: Callable[[Path], None], kind: str | None = None,
                  legacy: Callable[[Path], bool] | None = None) -> Path:
    """Run write(tmp_folder), fsync its files, then put it at `dest` (replacing any old one).

    kind: the new folder gets this marker (write_marker), and an existing `dest` is replaced only when it is
    a folder of the same kind (check_replaceable; `legacy` recognises one made before markers)."""
    dest = Path(dest)
    if kind is not None:
        check_replaceable(dest, kind, legacy)
    with writing(dest.parent):
        return _atomic_folder(dest, write, kind)


def _atomic_folder(dest: Path, write: Callable[[Path], None], kind: str | None) -> Path:
    write_no = _begin(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), dir=dest.parent))
    try:
        write(tmp)
        if kind is not None:
            write_marker(tmp, kind)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _crash_point(write_no, after=False)
        if dest.exists() and _exchange(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old version
        elif dest.exists():
            # No atomic swap here: rename the old one away first, so `dest` is complete or absent, never
            # half-written. A crash in between leaves the old version under .NAME.old-PID-*.
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest, "old"), dir=dest.parent))
            os.rmdir(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        _crash_point(write_no, after=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def remove_tree(path: str | Path, kind: str | None = None, legacy: Callable[[Path], bool] | None = None) -> None:
    """Delete a folder so that it is never seen half-deleted: rename it to a temporary name first (a kill
    during the deletion leaves a .NAME.old-PID-* that the next write in that folder sweeps).
    kind: only a folder of that kind is deleted (check_replaceable)."""
    path = Path(path)
    if not path.exists():
        return
    if kind is not None:
        check_replaceable(path, kind, legacy)
    hidden = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path, "old"), dir=path.parent))
    try:
        os.rmdir(hidden)
        os.replace(path, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
    finally:  # a Ctrl-C or SIGTERM in the middle: finish the deletion (milliseconds) rather than leave it to a sweep
        if hidden.exists():
            shutil.rmtree(hidden, ignore_errors=True)


def check_disk_space(folder: str | Path, need_bytes: int, what: str, fix: str) -> None:
    """Raise DiskSpaceError before writing `need_bytes` under `folder` when the disk has less free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise DiskSpaceError(f"not enough disk space for {what} in {folder}: needs about {need_bytes / 1e6:,.1f} MB, "
                             f"{free / 1e6:,.1f} MB free; {fix}")
