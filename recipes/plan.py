"""`python -m recipes.plan` in a clone = the installed `mlx-pn plan`; the code is mlx_pn/recipes/plan.py."""

from mlx_pn.recipes.plan import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
