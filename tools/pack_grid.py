"""Pack a comparison grid's results.json into the copy `mlx-pn plan` ships and reads by default: only the rows'
means, intervals, costs and parameters, the grid's settings (data size, step cap, selection rule per label), the
data sizes in tokens and the model config (no per-cell configs).

    python -m tools.pack_grid docs/compare-d128/results.json       # -> mlx_pn/compare/grids/compare-d128.json

The name is the grid's folder; the default grid is mlx_pn.compare.grid_file.DEFAULT_GRID (one line to change).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlx_pn.compare.grid_file import DEFAULT_GRID, load_grid, pack
from mlx_pn.io import write_text_atomic


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="a grid's results.json (OUT/results.json of `mlx-pn compare`)")
    p.add_argument("--to", default=None, help="output file (default: mlx_pn/compare/grids/GRIDFOLDER.json)")
    args = p.parse_args(argv)
    src = Path(args.results)
    load_grid(src)  # fails with the file, field and fix before anything is written
    dest = Path(args.to) if args.to else DEFAULT_GRID.parent / f"{src.resolve().parent.name}.json"
    source = src.as_posix() if not src.is_absolute() else src.name
    write_text_atomic(dest, json.dumps(pack(json.loads(src.read_text()), source), indent=1) + "\n")
    print(f"{dest}: {dest.stat().st_size:,} bytes")
    return dest


if __name__ == "__main__":
    main()
