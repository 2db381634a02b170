"""Charts of federated results, drawn on the hub from released aggregates only: a grid of
panels (one per feature and segment) that coordinator parts fill and save, with the axis in the
feature's unit (:mod:`radflow.federation.units`) and one legend for the figure.

    fig, axes = panel_grid(len(cells))
    for ax, cell in zip(axes, cells): ...
    save_grid(fig, axes, len(cells), folder / "chart.png", legend=handles)

A site's distribution is drawn only from a complete histogram (:func:`complete`): one whose
bins the site's gate suppressed is named as suppressed on the axis, never drawn from the bins
that are left (a flat line, or a shifted box).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from radflow.federation.units import Unit, feature_unit

SITE = "#1f5fbf"
POOLED = "#c0651a"
SUPPRESSED = "#8a5a00"


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


def save_grid(fig: Any, axes: list[Any], used: int, path: Path,
              legend: list[Any] | None = None) -> None:
    """Hide the panels left empty, put ``legend`` (handles) under the panels, lay the figure
    out and write it as PNG."""
    import matplotlib.pyplot as plt

    for ax in axes[used:]:
        ax.axis("off")
    bottom = 0.0
    if legend:
        inches = 0.32 * math.ceil(len(legend) / 3) + 0.15
        bottom = min(0.4, inches / fig.get_figheight())
        fig.legend(handles=legend, loc="lower center", ncol=min(3, len(legend)), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def complete(counts: Any, expected: int | None = None) -> bool:
    """Whether a released histogram can be drawn: no bin suppressed, some values, and (when
    the site's count of the cell is known) all of them."""
    if not isinstance(counts, list) or any(c is None for c in counts) or not sum(counts):
        return False
    return expected is None or sum(counts) == expected


def feature_axis(ax: Any, feature: str, segment: str, axis: str = "y") -> Unit:
    """Title a panel with its feature and segment and label its value axis with the unit;
    returns the unit (its scale turns stored values into shown ones)."""
    unit = feature_unit(feature)
    label = unit.symbol or "value (no unit)"
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label, fontsize=8)
    ax.set_title(f"{feature}\n{segment}", fontsize=8)
    ax.tick_params(labelsize=7)
    return unit


def pooled_box(ax: Any, x: float, row: dict[str, Any], bounds: dict[float, tuple[float, float]],
               unit: Unit) -> None:
    """The pooled distribution at ``x``: a box from the quantile estimates (whiskers 5th and
    95th percentile), each quantile's guaranteed interval as a shaded band across it."""
    s = unit.scale
    ax.bxp([{"label": "pooled", "whislo": row["p5"] * s, "q1": row["q1"] * s,
             "med": row["median"] * s, "q3": row["q3"] * s, "whishi": row["p95"] * s,
             "fliers": []}], positions=[x], widths=0.5, showfliers=False, patch_artist=True,
           boxprops={"facecolor": "#f6e3d2", "edgecolor": POOLED},
           medianprops={"color": POOLED}, whiskerprops={"color": POOLED},
           capprops={"color": POOLED})
    for low, high in bounds.values():
        ax.fill_between([x - 0.34, x + 0.34], low * s, high * s, color=POOLED, alpha=0.3,
                        linewidth=0, zorder=3)


def site_box(ax: Any, x: float, label: str, q: dict[str, float], unit: Unit) -> None:
    """One site's distribution at ``x`` from its complete histogram's quantiles."""
    s = unit.scale
    ax.bxp([{"label": label, "whislo": q["p5"] * s, "q1": q["q1"] * s, "med": q["median"] * s,
             "q3": q["q3"] * s, "whishi": q["p95"] * s, "fliers": []}], positions=[x],
           widths=0.5, showfliers=False, patch_artist=True,
           boxprops={"facecolor": "#dce7f8", "edgecolor": SITE}, medianprops={"color": SITE},
           whiskerprops={"color": SITE}, capprops={"color": SITE})


def label_positions(ax: Any, labels: list[str], suppressed: set[str]) -> None:
    """Name every position; a suppressed site's says so (and nothing is drawn there)."""
    ax.set_xticks(range(len(labels)), [f"{n}\n(suppressed)" if n in suppressed else n
                                       for n in labels], fontsize=7)
    for tick, name in zip(ax.get_xticklabels(), labels, strict=True):
        if name in suppressed:
            tick.set_color(SUPPRESSED)
            tick.set_fontstyle("italic")
    ax.set_xlim(-0.6, len(labels) - 0.4)


def box_legend() -> list[Any]:
    """The legend of the box panels: a site's box, the pooled box, the quantile intervals."""
    from matplotlib.patches import Patch

    return [Patch(facecolor="#dce7f8", edgecolor=SITE,
                  label="a site (complete histogram): box Q1–Q3, median, whiskers 5th–95th"),
            Patch(facecolor="#f6e3d2", edgecolor=POOLED, label="pooled: the quantile estimates"),
            Patch(facecolor=POOLED, alpha=0.3, label="pooled: each quantile's guaranteed bounds")]
