"""How a hint names a recipe: the way this process was started, so the command it prints can be pasted.

From a clone, ``python -m recipes.NAME`` (the README's form: the thin modules of the top-level
``recipes/``); anywhere else (the installed ``mlx-pn NAME``, ``python -m mlx_pn NAME``, a user's own
script importing mlx_pn) ``mlx-pn NAME``, the one that exists wherever the package is installed.
"""

import sys
from pathlib import Path


def recipe_command(name: str) -> str:
    """'python -m recipes.NAME' when this process runs a clone's recipes/NAME.py, else 'mlx-pn NAME'."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    in_clone = script.parent.name == "recipes" and script.parent.parent.name != "mlx_pn"
    return f"python -m recipes.{name}" if in_clone else f"mlx-pn {name}"
