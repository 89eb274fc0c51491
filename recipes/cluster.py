"""`python -m recipes.cluster` in a clone = the installed `mlx-pn cluster`; the code is mlx_pn/recipes/cluster.py."""

from mlx_pn.recipes.cluster import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
