"""Prefect artifacts: what an ingest run did, and what the catalog now holds."""

from __future__ import annotations

import base64
import io
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact, create_table_artifact

from radflow.catalog.db import optimize, session_scope
from radflow.catalog.store import catalog_stats
from radflow.cohorts import columns
from radflow.runtime import site_runtime


def stats_chart(stats: dict[str, Any]) -> bytes:
    """A PNG with three bar charts: series by modality, by manufacturer, and by finding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("series by modality", stats["by_modality"]),
              ("series by manufacturer", stats["by_manufacturer"]),
              ("series with a warning or error", stats["series_with_finding"])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, counts) in zip(axes, panels, strict=True):
        labels = list(counts) or ["(none)"]
        ax.barh(labels, [counts.get(k, 0) for k in labels], color="#3b6ea5")
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


@task(name="ingest-report")
def ingest_report(rows: list[dict[str, Any]], site: str | None = None) -> dict[str, Any]:
    """Publish a table of the run's series and a PNG chart of the whole catalog."""
    rt = site_runtime(site)
    optimize(rt.catalog_url)  # keep cohort queries on good plans as the catalog grows
    try:  # and, for a big catalog, their columnar copy current
        built = columns.refresh(rt.catalog_url)
        if built["state"] == "built":
            get_run_logger().info("cohort copy of the catalog rebuilt: %d series in %.1f s",
                                  built["series"], built["seconds"])
    except Exception as exc:  # noqa: BLE001  (queries answer in SQL meanwhile: nothing is lost)
        get_run_logger().warning("the catalog's columnar copy could not be rebuilt (%s); cohort "
                                 "queries answer in SQL until the next ingest", exc)
    with session_scope(rt.catalog_url) as session:
        stats = catalog_stats(session)
    table = [{**row, "findings": ", ".join(row.get("findings", [])) or "-"} for row in rows]
    create_table_artifact(table=table, key="ingest-series",
                          description=f"Series cataloged by this run ({len(rows)})")
    png = base64.b64encode(stats_chart(stats)).decode()
    create_image_artifact(image_url=f"data:image/png;base64,{png}", key="catalog-chart",
                          description=f"Catalog: {stats['series']} series, "
                                      f"{stats['instances']} instances")
    return stats
