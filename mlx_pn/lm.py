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
    known = _subcommands(cli)
    if known and argv[0] not in known and argv[0] not in ("-h", "--help", "--version"):
        import difflib

        close = difflib.get_close_matches(argv[0], known, n=1)
        print(f"error: mlx-pn lm: unknown subcommand '{argv[0]}'" + (f"; did you mean '{close[0]}'?" if close else "")
              + f" (mlx-lm's subcommands: {', '.join(known)})", file=sys.stderr)
        raise SystemExit(2)
    cli.main()


def _subcommands(cli) -> tuple[str, ...]:
    """mlx-lm's subcommands, read from its dispatcher (a tuple literal in mlx_lm/cli.py's main); () if unreadable."""
    code = cli.main.__code__
    return next((c for c in code.co_consts if isinstance(c, tuple) and "generate" in c), ())


if __name__ == "__main__":
    main()
