"""`python -m recipes.specialize` in a clone = the installed `mlx-pn specialize`; the code is mlx_pn/recipes/specialize.py."""

from mlx_pn.recipes.specialize import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
