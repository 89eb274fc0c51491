"""What every recipe shares: flags for resuming, and turning library errors into clear exits."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import mlx_pn  # noqa: F401  (sets up the BLAS before anything imports mlx.core)
from mlx_pn.config import ConfigError
from mlx_pn.data.sources import DataError
from mlx_pn.export import ExportError
from mlx_pn.train.checkpoint import CheckpointError
from mlx_pn.train.loop import TrainingError


def add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the newest good checkpoint / skip finished stages (--no-resume starts over)")


@contextmanager
def clear_errors():
    """Known, user-fixable errors print one line (what, where, how to fix) and exit 2."""
    try:
        yield
    except (ConfigError, DataError, ExportError, CheckpointError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
