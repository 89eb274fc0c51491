"""``python -m mlx_pn NAME ARGS``: the same as the installed ``mlx-pn NAME ARGS``."""

from mlx_pn.recipes import main

if __name__ == "__main__":
    main()
