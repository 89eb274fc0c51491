"""`python -m recipes.compare` in a clone = the installed `mlx-pn compare`; the code is mlx_pn/recipes/compare.py."""

from mlx_pn.recipes.compare import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
