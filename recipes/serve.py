"""`python -m recipes.serve` in a clone = the installed `mlx-pn serve`; the code is mlx_pn/recipes/serve.py."""

from mlx_pn.recipes.serve import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
