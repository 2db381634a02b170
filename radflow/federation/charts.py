"""Charts of federated results, drawn on the hub from released aggregates only: a grid of
panels (one per feature and segment) that coordinator parts fill and save.

    fig, axes = panel_grid(len(cells))
    for ax, cell in zip(axes, cells): ...
    save_grid(fig, axes, len(cells), folder / "chart.png")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def panel_grid(count: int, width: float = 4.4, height: float = 3.1) -> tuple[Any, list[Any]]:
    """A figure with ``count`` panels, at most three a row; returns it and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(3, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False)
    return fig, list(axes.flat)


def save_grid(fig: Any, axes: list[Any], used: int, path: Path) -> None:
    """Hide the panels left empty, lay the figure out and write it as PNG."""
    import matplotlib.pyplot as plt

    for ax in axes[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
