"""PNG plots of training runs (matplotlib, headless Agg backend)."""

from __future__ import annotations

import json

import numpy as np
from pathlib import Path


def save_png(fig, path: Path) -> None:
    """PNG written atomically: a crash never leaves half a plot."""
    from mlx_pn.io import atomic_file

    atomic_file(path, lambda f: fig.savefig(f, format="png", dpi=110))


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def plot_training_curves(runs: dict[str, str | Path], out_png: str | Path, title: str = "") -> Path:
    """One panel per run: training loss per step and validation NLL at each evaluation (nats/token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (name, metrics) in zip(axes[0], runs.items()):
        rows = read_metrics(metrics)
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        valid = [(r["step"], r["valid_nll"]) for r in rows if "valid_nll" in r]
        if train:
            ax.plot(*zip(*train), label="train loss", lw=1.2)
        if valid:
            ax.plot(*zip(*valid), "o-", label="valid NLL", lw=1.5)
        ax.set(title=name, xlabel="step", ylabel="nats / token")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, out_png)
    plt.close(fig)
    return out_png
