"""The ``ingest`` flow: catalog series in Orthanc (their headers, not their pixels).

Two ways to run it:

* started by the site's change watcher (no ``series_ids``): it claims the series Orthanc reported
  stable from the site's ingest queue, catalogs them, claims again, and ends after
  ``idle_seconds`` without new work. A burst of studies is one run, with one task per series.
* by hand with ``series_ids`` (Orthanc series identifiers): catalogs exactly those.

A series that fails (after its task's retries of transient failures) is still cataloged, from
Orthanc's index, with status ``error`` and a ``catalog_failed`` finding naming the reason; the
others go on. Nothing Orthanc holds is ever only a line in a log.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from radflow.errors import RadflowError
from radflow.tasks.ingest import (
    catalog_series,
    claim_requests,
    close_requests,
    record_failure,
)
from radflow.tasks.reports import ingest_report

REPORT_AFTER_IDLE = 3.0  # seconds without new work before the report is brought up to date


def _catalog(series_ids: list[str], site: str | None) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    logger = get_run_logger()
    futures = {sid: catalog_series.submit(sid, site) for sid in series_ids}
    rows, outcomes = [], {}
    for sid, future in futures.items():
        future.wait()
        if future.state.is_completed():
            rows.append(future.result())
            outcomes[sid] = None
        else:
            message = (future.state.message or "failed").split("\n")[0][:500]
            rows.append({"series_id": sid, "status": "failed", "findings": ["catalog_failed"],
                         "error": message})
            outcomes[sid] = message
            logger.warning("series %s could not be cataloged: %s", sid, message)
            try:
                record_failure(sid, message, site)
            except RadflowError as exc:  # Orthanc unreachable: the request is retried later
                logger.warning("series %s: recording the failure failed too: %s", sid, exc)
    return rows, outcomes


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def ingest(series_ids: list[str] | None = None, site: str | None = None,
           idle_seconds: float = 30.0, max_minutes: float = 15.0) -> dict[str, Any]:
    """Catalog series and publish a report (a table of the series, a chart of the catalog).

    Args:
        series_ids: Orthanc series identifiers; without them, work through the ingest queue.
        site: the site name (default: RADFLOW_SITE of the worker).
        idle_seconds: queue mode: end after this long without new work.
        max_minutes: queue mode: end after this long in any case (the watcher starts another).
    """
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    reported = 0
    if series_ids:
        rows, _ = _catalog(series_ids, site)
    else:
        run_id = flow_run.get_id()
        started = idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_seconds and \
                time.monotonic() - started < max_minutes * 60:
            claimed = claim_requests(run_id, site)
            if claimed:
                done, outcomes = _catalog(claimed, site)
                close_requests(run_id, outcomes, site)
                rows += done
                idle_since = time.monotonic()
                continue
            if len(rows) > reported and time.monotonic() - idle_since > REPORT_AFTER_IDLE:
                ingest_report(rows, site)  # a burst ended: show it now, not when the run ends
                reported = len(rows)
            time.sleep(0.5)
    failed = sum(1 for r in rows if r["status"] == "failed")
    stats = ingest_report(rows, site) if len(rows) > reported else None
    logger.info("cataloged %d series (%d failed)%s", len(rows) - failed, failed,
                f"; the catalog holds {stats['series']} series" if stats else "")
    return {"cataloged": len(rows) - failed, "failed": failed}
