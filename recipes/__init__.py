"""Thin entry points for a clone: ``python -m recipes.NAME --config PRESET [--key value]`` runs
``mlx_pn.recipes.NAME`` (installed: ``mlx-pn NAME``). ``recipes/configs`` is a link to the packaged presets,
``mlx_pn/recipes/configs``."""
