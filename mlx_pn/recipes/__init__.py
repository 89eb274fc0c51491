"""The recipes: one module per command, each with ``build_parser()`` and ``main(argv)`` (mlx-lm's style).

Installed, ``mlx-pn NAME ARGS`` runs ``mlx_pn.recipes.NAME.main`` (also ``python -m mlx_pn NAME``); in a
clone, ``python -m recipes.NAME`` does the same through the thin modules of the top-level ``recipes/``.
``mlx-pn lm ARGS`` is mlx-lm's own command line with the BLAS set up (:mod:`mlx_pn.lm`). The presets
(``--config tiny``) are the YAML files of ``mlx_pn/recipes/configs/``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading


def _terminated_while_starting(signum, frame) -> None:
    """SIGTERM before the command installed its own handler (mlx_pn.interrupt, once the config loads): nothing has
    been written yet, so say so and exit 143 at once, like every other interrupted command (it died silently, -15)."""
    sys.stderr.write("interrupted (SIGTERM) while starting; nothing was written; rerun the same command\n")
    sys.stderr.flush()
    os._exit(143)


# from the first moment a command (mlx-pn NAME, python -m recipes.NAME) runs; a program that set its own handler
# keeps it
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _terminated_while_starting)

COMMANDS = {  # name -> what it does (the module mlx_pn.recipes.NAME runs it)
    "quickstart": "the whole pipeline on the bundled text: data, pretrain, fine-tune, export, mlx-lm generation",
    "prepare": "build a corpus (the offline mix or your own), then the tokenizer and token shards",
    "pretrain": "pretrain a method on the generic corpus (--method slm, llm, slm-pn, slm-mix, slm-hn, slm-d)",
    "cluster": "embed and k-means every training window (needed by slm-is, slm-pn, slm-mix, slm-hn)",
    "importance": "slm-is: pretrain on generic windows resampled to a domain's clusters",
    "specialize": "fine-tune a pretrained method on --domain; perplexity before and after",
    "export": "export a specialized model to an mlx-lm folder (with a model card), verified by reloading",
    "serve": "serve a run's specialists on one OpenAI-style endpoint, each request routed by its clusters",
    "compare": "every method at matched pretraining FLOPs: results tables and plots",
    "plan": "which method to train for your budgets and number of domains, read off a grid's results.json",
    "lm": "mlx-lm's own command line (generate, perplexity, lora, server, upload, ...) with the BLAS set up",
}
USAGE = f"usage: mlx-pn {{{','.join(COMMANDS)}}} [--help] [ARGS ...]"


def _preset_names() -> list[str]:
    from pathlib import Path

    return sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))


def main(argv=None) -> None:
    """``mlx-pn NAME ARGS``: hand ARGS to recipe NAME (or to mlx-lm's CLI for ``lm``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + "\n".join(f"  {n:<11s} {what}" for n, what in COMMANDS.items())
              + "\n\nPresets: --config NAME (mlx_pn/recipes/configs/NAME.yaml): " + ", ".join(_preset_names())
              + ". One command's options: mlx-pn NAME --help")
        if not argv:
            raise SystemExit(2)
        return
    if argv[0] == "--version":
        from mlx_pn import __version__

        print(__version__)
        return
    name, rest = argv[0], argv[1:]
    if name == "lm":
        from mlx_pn import lm

        lm.main(rest)
        return
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"{USAGE}\nmlx-pn: error: unknown command '{name}'{hint}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [f"mlx-pn {name}", *rest]  # argparse's usage line names the command as typed
    importlib.import_module(f"mlx_pn.recipes.{name}").main(rest)

