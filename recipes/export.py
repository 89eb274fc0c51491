"""`python -m recipes.export` in a clone = the installed `mlx-pn export`; the code is mlx_pn/recipes/export.py."""

from mlx_pn.recipes.export import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
