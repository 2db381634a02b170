"""The ``ingest`` flow: catalog the series that Orthanc reported stable.

Started by the site's change watcher through the ``ingest/<site>`` deployment, one run per
batch of stable series. A series that fails (after retries) is reported and the others go on.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from radflow.tasks.ingest import catalog_series, close_requests
from radflow.tasks.reports import ingest_report


@flow(name="ingest", log_prints=False)
def ingest(series_ids: list[str], batch: int | None = None, site: str | None = None) -> dict[str, Any]:
    """Catalog the given Orthanc series (headers only) and publish a report.

    Args:
        series_ids: Orthanc identifiers of the series.
        batch: the watcher's batch number, whose requests this run closes.
        site: the site name (default: RADFLOW_SITE of the worker).
    """
    logger = get_run_logger()
    futures = {sid: catalog_series.submit(sid, site) for sid in series_ids}
    rows, outcomes = [], {}
    for sid, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            rows.append(future.result())
            outcomes[sid] = None
        else:
            message = state.message or "failed"
            rows.append({"series_id": sid, "status": "failed", "findings": [], "error": message})
            outcomes[sid] = message
            logger.warning("series %s could not be cataloged: %s", sid, message)
    if batch is not None:
        close_requests(batch, outcomes, site)
    stats = ingest_report(rows, site)
    failed = sum(1 for e in outcomes.values() if e)
    logger.info("cataloged %d series (%d failed); catalog holds %d series",
                len(series_ids) - failed, failed, stats["series"])
    return {"cataloged": len(series_ids) - failed, "failed": failed, "catalog_series": stats["series"]}
