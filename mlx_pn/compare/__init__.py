"""The comparison grid (recipes.compare): grid.py runs or continues the cells and collects their numbers,
results.py turns them into tables, plots.py into figures."""

from mlx_pn.compare.grid import CompareConfig, report_only, run_grid

__all__ = ["CompareConfig", "report_only", "run_grid"]
