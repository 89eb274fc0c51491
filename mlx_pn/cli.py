"""Command-line front end shared by every recipe: ``--config FILE`` plus one flag per config key.

Every recipe builds its parser the same way::

    parser = build_parser(__doc__, extra=add_options, default_config=CONFIGS / "quickstart.yaml")
    cfg, args = parse(parser, argv)

`default_config` is the file read when no --config is given (None: the dataclass defaults alone); --help
shows it.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from mlx_pn.config import PRESETS, Config, ConfigError, _base_type, leaf_keys


def _shown(path: Path) -> str:
    """A default config as --help shows it: relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def build_parser(description: str, cls=Config, extra: typing.Callable | None = None,
                 default_config: str | Path | None = None) -> argparse.ArgumentParser:
    """An argparse parser whose --help lists every config key with its default and meaning.

    cls: the config dataclass (Config, or a subclass with more sections); extra(parser) adds the recipe's own
    flags; default_config: the file read when the command line has no --config (None: defaults only)."""
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Precedence: command line > --config file > defaults. Keys are dotted: --pretrain.lr 3e-4.",
    )
    shown = "" if default_config is None else f"; default: {_shown(default_config)}"
    presets = ", ".join(sorted(f.stem for f in PRESETS.glob("*.yaml")))
    p.add_argument("--config", help=f"YAML or JSON config file, or a packaged preset by name ({presets}){shown}",
                   default=None if default_config is None else str(default_config))
    p.config_class = cls  # parse() builds this class
    if extra:
        extra(p)
    defaults = cls()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, (tp, f) in leaf_keys(cls).items():
        section = key.split(".")[0] if "." in key else "experiment"
        g = groups.setdefault(section, p.add_argument_group(f"{section} options"))
        obj = defaults
        for part in key.split("."):
            obj = getattr(obj, part)
        base = _base_type(tp)
        meta = {bool: "BOOL", int: "INT", float: "FLOAT"}.get(base, "NAME=SRC,..." if base is dict else "STR")
        # Values stay strings here; config.parse_value converts them with the field's type.
        g.add_argument(f"--{key}", dest=f"ov:{key}", default=None, metavar=meta,
                       # argparse %-formats help: a literal % in a field's help must not crash --help
                       help=f"{f.metadata.get('help', '')} (default: {obj!r})".replace("%", "%%"))
    return p


def parse(parser: argparse.ArgumentParser, argv=None, cls=None):
    """-> (config, namespace). Exits with a clear message on any config error. cls: the parser's by default."""
    args, unknown = parser.parse_known_args(argv)
    cls = cls or getattr(parser, "config_class", Config)
    if unknown:
        flag = unknown[0]
        key = flag.lstrip("-").split("=")[0]
        import difflib

        close = difflib.get_close_matches(key, list(leaf_keys(cls)), n=1, cutoff=0.5)
        hint = f"; did you mean '--{close[0]}'?" if close else "; see --help for the valid options"
        parser.error(f"unknown option '{flag}'{hint}")
    overrides = {k[3:]: v for k, v in vars(args).items() if k.startswith("ov:") and v is not None}
    from mlx_pn import interrupt
    from mlx_pn.methods import load_config  # with the method's own rules (imports mlx: after --help)

    # loading the config takes seconds (it imports mlx): a SIGTERM there is the one-line exit 143 too
    interrupt.install_sigterm()
    try:
        cfg = load_config(args.config, overrides, cls)
        _adopt_remembered_data(cfg, args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as interrupt.Terminated
        interrupt.exit_interrupted(e)
    return cfg, args


def _adopt_remembered_data(cfg, config_file, overrides: dict) -> None:
    """A run remembers its data (mlx_pn.data.remembered): keys the user did not set default to the run's own."""
    from mlx_pn.config import load_file
    from mlx_pn.data import remembered

    if getattr(cfg, "data", None) is None or not hasattr(cfg, "data_dir"):
        return
    explicit = set(overrides) | (remembered.dotted_keys(load_file(config_file)) if config_file else set())
    changed = remembered.adopt(cfg, explicit)
    if changed:
        print(f"[data] this run's data was prepared with other settings; using them "
              f"({cfg.data_dir / remembered.FILE}): " + ", ".join(f"{k}={_short(cfg, k)}" for k in changed),
              file=sys.stderr)


def _short(cfg, key: str) -> str:
    v = getattr(cfg.data, key.split(".", 1)[1])
    return ",".join(v) if isinstance(v, dict) else repr(v)
