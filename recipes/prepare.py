"""`python -m recipes.prepare` in a clone = the installed `mlx-pn prepare`; the code is mlx_pn/recipes/prepare.py."""

from mlx_pn.recipes.prepare import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
