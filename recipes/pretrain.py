"""`python -m recipes.pretrain` in a clone = the installed `mlx-pn pretrain`; the code is mlx_pn/recipes/pretrain.py."""

from mlx_pn.recipes.pretrain import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
