"""`python -m recipes.importance` in a clone = the installed `mlx-pn importance`; the code is mlx_pn/recipes/importance.py."""

from mlx_pn.recipes.importance import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
