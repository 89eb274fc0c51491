"""Ctrl-C and SIGTERM: one line saying where the run stopped and how to resume, exit 130 / 143, no traceback.

SIGTERM (what `kill`, a scheduler or a container stop sends) is turned into :class:`Terminated`, a
KeyboardInterrupt, raised in the main thread like Ctrl-C's: every ``finally`` and every durable write
(mlx_pn.io) unwinds the same way, so an interrupted write leaves only its temporary name, never a half-written
output under the final one. The training loop records where it is with :func:`note` (stage, step, last
checkpoint); the recipes' ``clear_errors`` prints :func:`message` and exits with :func:`exit_code`.
"""

from __future__ import annotations

import signal
import sys
import threading

EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number: what a shell reports for a killed command


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like the KeyboardInterrupt of Ctrl-C."""


_where: dict = {}  # {"desc": stage, "step": steps done, "checkpoint": newest checkpoint or None}


def note(desc: str, step: int, checkpoint=None) -> None:
    """The training loop's position (called every step: a dict update)."""
    _where.update(desc=desc, step=step, checkpoint=checkpoint)


def done() -> None:
    """A training run ended normally: an interrupt from now on is not "at step N" of it."""
    _where.clear()


def _raise_terminated(signum, frame):
    """SIGTERM: Terminated, unless the process is already stopping on an exception (a data-parallel peer lost, with
    the launcher's SIGTERM right behind it; or a Ctrl-C being reported): then a second traceback would bury the
    first error, so end now with its one line."""
    handling = sys.exc_info()[1]
    if handling is None:
        raise Terminated()
    dist = sys.modules.get("mlx_pn.train.distributed")
    lost = dist.lost_peer(handling) if dist is not None and isinstance(handling, Exception) else None
    if lost:
        print(f"error: {lost}", file=sys.stderr)
        raise SystemExit(2)
    print(f"interrupted (SIGTERM) while stopping on {type(handling).__name__}: {str(handling)[:200]}", file=sys.stderr)
    raise SystemExit(EXIT_SIGTERM)


def install_sigterm() -> None:
    """SIGTERM raises Terminated in the main thread (a no-op elsewhere: signals are the main thread's)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(e: KeyboardInterrupt) -> int:
    return EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT


def exit_interrupted(e: KeyboardInterrupt) -> None:
    """Print :func:`message` on stderr and exit with :func:`exit_code`: the end of a command that was interrupted."""
    print(message(e), file=sys.stderr)
    raise SystemExit(exit_code(e)) from None


def rank() -> tuple[int, int]:
    """(this process's rank, the number of ranks) of a data-parallel run, (0, 1) otherwise. Read only when
    mlx_pn.train.distributed has been imported (it imports MLX): a run that never imported it has one rank."""
    dist = sys.modules.get("mlx_pn.train.distributed")
    if dist is None or not dist._world:
        return 0, 1
    _, r, n = dist.world()
    return r, n


def where() -> str:
    """'at step 12 of [pretrain]; last checkpoint: ...' (rank 0 keeps the books: another rank's line says so
    instead of naming no checkpoint); '' outside training."""
    if not _where:
        return ""
    r, n = rank()
    at = f"at step {_where['step']} of [{_where['desc']}]"
    if r:
        return f"{at} on rank {r} of {n}; rank 0 writes the checkpoints (its own line names the last)"
    ckpt = _where.get("checkpoint")
    return f"{at}; last checkpoint: {ckpt if ckpt else 'none yet (this stage restarts from step 0)'}"


def message(e: KeyboardInterrupt) -> str:
    """'interrupted (SIGTERM) at step 12 of [pretrain]; last checkpoint ...; rerun the same command to resume'."""
    how = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
    if not _where:
        return (f"interrupted ({how}) outside training; finished stages and files are kept; rerun the same command "
                f"to resume")
    return f"interrupted ({how}) {where()}; rerun the same command to resume"
