"""mlx-lm's own command line, with the BLAS set up first: ``python -m mlx_pn.lm ARGS`` = ``mlx-pn lm ARGS``.

On Linux CPUs the mlx wheel links the reference BLAS; ``import mlx_pn`` loads OpenBLAS before ``mlx.core``
(:mod:`mlx_pn.platform`), which a plain ``python -m mlx_lm ...`` never does. This module does that, then
hands the arguments unchanged to mlx-lm's dispatcher (``mlx_lm/cli.py``: the first argument is the
subcommand, e.g. ``generate``, ``perplexity``, ``lora``, ``server``, ``upload``; ``--help`` lists them)::

    python -m mlx_pn.lm generate --model runs/quickstart/export/drama --prompt 'KING HENRY.'
    mlx-pn lm perplexity --model runs/quickstart/export/drama --data-path DIR
"""

from __future__ import annotations

import sys

import mlx_pn  # noqa: F401  (OpenBLAS before mlx.core: the whole point of this module)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from mlx_lm import cli

    sys.argv = ["mlx_lm", *argv]  # mlx_lm.cli.main reads (and pops) the subcommand from sys.argv[1]
    if not argv:
        print("usage: mlx-pn lm SUBCOMMAND [ARGS ...]   (mlx-lm's own subcommands; --help lists them)",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        cli.main()
    except ValueError as e:  # mlx_lm.cli's "CLI requires a subcommand in (...)": a traceback for a typo
        if not str(e).startswith("CLI requires a subcommand"):
            raise
        import difflib

        names = str(e).split(" in ", 1)[1].strip("()").replace("'", "").split(", ")
        close = difflib.get_close_matches(argv[0], names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        print(f"mlx-pn lm: error: unknown subcommand '{argv[0]}'; {hint}choose one of {', '.join(names)}",
              file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
