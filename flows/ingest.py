"""The ``ingest`` flow: catalog series in Orthanc (their headers, not their pixels).

Two ways to run it:

* started by the site's change watcher (no ``series_ids``): it claims the series Orthanc reported
  stable from the site's ingest queue as threads come free (four series at a time), closes each
  as soon as it is cataloged, and ends after ``idle_seconds`` without new work. A burst of
  studies is one run, with one task per series.
* by hand with ``series_ids`` (Orthanc series identifiers): catalogs exactly those.

A series that fails (after its task's retries of transient failures) is still cataloged, from
Orthanc's index, with status ``error`` and a ``catalog_failed`` finding naming the reason; the
others go on. Nothing Orthanc holds is ever only a line in a log.
"""

from __future__ import annotations

import concurrent.futures
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
WORKERS = 4  # series cataloged at once (the task runner's threads)
POLL_SECONDS = 0.25  # how often a waiting run looks at its queue


def _outcome(sid: str, future: Any, site: str | None) -> tuple[dict[str, Any], str | None]:
    """A finished catalog task's report row, and its error (None when it went well); a failed
    series is recorded as such."""
    future.wait()
    if future.state.is_completed():
        return future.result(), None
    message = (future.state.message or "failed").split("\n")[0][:500]
    get_run_logger().warning("series %s could not be cataloged: %s", sid, message)
    try:
        record_failure(sid, message, site)
    except RadflowError as exc:  # Orthanc unreachable: the request is retried later
        get_run_logger().warning("series %s: recording the failure failed too: %s", sid, exc)
    return {"series_id": sid, "status": "failed", "findings": ["catalog_failed"],
            "error": message}, message


def _catalog(series_ids: list[str], site: str | None) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    futures = {sid: catalog_series.submit(sid, site) for sid in series_ids}
    rows, outcomes = [], {}
    for sid, future in futures.items():
        row, outcomes[sid] = _outcome(sid, future, site)
        rows.append(row)
    return rows, outcomes


def _work_through_queue(site: str | None, idle_seconds: float,
                        max_minutes: float) -> tuple[list[dict[str, Any]], int]:
    """Catalog the queue's series as they come: a series is claimed as soon as a thread is free
    and closed as soon as it is cataloged (a burst is a stream, not batches that wait for their
    slowest series). Returns the report's rows and how many of them were reported already."""
    run_id = flow_run.get_id()
    rows: list[dict[str, Any]] = []
    reported = 0
    in_flight: dict[Any, tuple[str, Any]] = {}  # the task's concurrent future -> series, task
    started = idle_since = time.monotonic()
    while True:
        claiming = time.monotonic() - started < max_minutes * 60
        if not in_flight and (not claiming or time.monotonic() - idle_since >= idle_seconds):
            break
        if claiming and len(in_flight) < WORKERS:
            for sid in claim_requests(run_id, site, limit=WORKERS - len(in_flight)):
                future = catalog_series.submit(sid, site)
                in_flight[future.wrapped_future] = (sid, future)
        if in_flight:
            done, _ = concurrent.futures.wait(list(in_flight), timeout=POLL_SECONDS,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            outcomes = {}
            for wrapped in done:
                sid, future = in_flight.pop(wrapped)
                row, outcomes[sid] = _outcome(sid, future, site)
                rows.append(row)
            if outcomes:
                close_requests(run_id, outcomes, site)
            idle_since = time.monotonic()
            continue
        if len(rows) > reported and time.monotonic() - idle_since > REPORT_AFTER_IDLE:
            ingest_report(rows, site)  # a burst ended: show it now, not when the run ends
            reported = len(rows)
        time.sleep(POLL_SECONDS)
    return rows, reported


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS), log_prints=False)
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
    reported = 0
    if series_ids:
        rows, _ = _catalog(series_ids, site)
    else:
        rows, reported = _work_through_queue(site, idle_seconds, max_minutes)
    failed = sum(1 for r in rows if r["status"] == "failed")
    stats = ingest_report(rows, site) if len(rows) > reported else None
    logger.info("cataloged %d series (%d failed)%s", len(rows) - failed, failed,
                f"; the catalog holds {stats['series']} series" if stats else "")
    return {"cataloged": len(rows) - failed, "failed": failed}
