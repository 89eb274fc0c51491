"""`python -m recipes.quickstart` in a clone = the installed `mlx-pn quickstart`; the code is mlx_pn/recipes/quickstart.py."""

from mlx_pn.recipes.quickstart import DEFAULT_CONFIG, build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
