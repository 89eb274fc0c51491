"""What every recipe shares: the preset folder, flags for resuming, and turning library errors into clear exits."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import mlx_pn  # noqa: F401  (sets up the BLAS before anything imports mlx.core)
from mlx_pn.config import ConfigError
from mlx_pn.data.sources import DataError
from mlx_pn.io import DiskSpaceError, ForeignFolderError, WriteError, write_error

from mlx_pn.config import PRESETS as CONFIGS  # noqa: E402 (the preset files: mlx_pn/recipes/configs; a recipe's default_config is one of them)

# Error classes of heavier modules, looked up only when something was raised: importing mlx_pn.export
# (mlx_lm, transformers) costs ~2 s, and an error of a module never imported cannot have been raised.
_LAZY = {"mlx_pn.export": "ExportError", "mlx_pn.models.build": "CheckpointError",
         "mlx_pn.train.state": "TrainingError", "mlx_pn.runlock": "RunLockError"}


def add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the newest good checkpoint / skip finished stages (--no-resume starts over)")


def known_errors() -> tuple[type, ...]:
    """The user-fixable error classes: what, where, how to fix in one message."""
    lazy = tuple(getattr(sys.modules[m], name) for m, name in _LAZY.items() if m in sys.modules)
    return (ConfigError, DataError, DiskSpaceError, WriteError, ForeignFolderError) + lazy


def claim_outputs(cfg) -> None:
    """Claim the run's output folders (--out, and --data.dir when set) before anything is written under them
    (mlx_pn.io.claim_output: never a user's own folder, a file, the installed package or a path too long)."""
    from mlx_pn.io import claim_output

    claim_output(cfg.out, "--out")
    if getattr(getattr(cfg, "data", None), "dir", ""):
        claim_output(cfg.data.dir, "--data.dir")


def _lost_peer(e: Exception) -> str | None:
    """A data-parallel rank whose peer went away (mlx_pn.train.distributed.lost_peer); only a process that joined a
    group (imported that module) can meet one."""
    dist = sys.modules.get("mlx_pn.train.distributed")
    return dist.lost_peer(e) if dist is not None else None


@contextmanager
def clear_errors(cfg=None):
    """cfg: claim its output folders first (claim_outputs). Known, user-fixable errors print one line (what, where, how to fix) and exit 2, as do a full disk and a
    read-only folder (mlx_pn.io.write_error, MLX's nameless write errors included); Ctrl-C and SIGTERM print where
    the run stopped and how to resume (mlx_pn.interrupt) and exit 130 / 143, without a traceback."""
    from mlx_pn import interrupt

    interrupt.install_sigterm()
    try:
        if cfg is not None:
            claim_outputs(cfg)
        yield
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as interrupt.Terminated
        interrupt.exit_interrupted(e)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is one of ours
        err = e if isinstance(e, known_errors()) else write_error(e, None) or _lost_peer(e)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
