"""Kept for imports of the old path: the shared recipe helpers live in mlx_pn/recipes/_common.py."""

from mlx_pn.recipes._common import CONFIGS, add_resume, clear_errors, known_errors  # noqa: F401
