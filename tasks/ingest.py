"""Tasks of the ingest flow: read a series' headers from Orthanc, catalog it, close requests."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.headers import parse_series
from radflow.catalog.models import IngestRequest, utcnow
from radflow.catalog.store import upsert_series
from radflow.errors import OrthancError
from radflow.orthanc.client import series_state
from radflow.runtime import site_runtime


@task(name="catalog-series", retries=3, retry_delay_seconds=[2, 5, 15],
      task_run_name="catalog-series-{series_id}")
def catalog_series(series_id: str, site: str | None = None) -> dict[str, Any]:
    """Read every header of one series (no pixel data) and write it into the catalog.

    Returns a summary row for the run's report. A series deleted in the meantime is reported
    as ``gone``; Orthanc being unreachable is retried, then fails this series only.
    """
    rt = site_runtime(site)
    orthanc = rt.orthanc
    try:
        series = orthanc.resource("series", series_id)
    except OrthancError as exc:
        if exc.status == 404:
            return {"series_id": series_id, "status": "gone", "findings": []}
        raise
    tags = orthanc.series_tags(series_id)
    syntaxes = orthanc.transfer_syntaxes(list(tags))
    study = orthanc.resource("studies", series["ParentStudy"])
    parsed = parse_series(series_id, tags, syntaxes, series_state(series))
    with session_scope(rt.catalog_url) as session:
        upsert_series(session, parsed, patient_orthanc_id=study["ParentPatient"],
                      study_orthanc_id=series["ParentStudy"])
    if parsed.findings:
        get_run_logger().info("series %s: %s", series_id,
                              ", ".join(sorted({f.code for f in parsed.findings})))
    return {
        "series_id": series_id,
        "status": parsed.status,
        "modality": parsed.series["modality"],
        "description": parsed.series["series_description"],
        "instances": parsed.series["num_instances"],
        "findings": sorted({f.code for f in parsed.findings}),
    }


@task(name="close-requests")
def close_requests(batch: int, outcomes: dict[str, str | None], site: str | None = None) -> int:
    """Mark the batch's requests done (or failed, with the error); returns how many closed."""
    rt = site_runtime(site)
    closed = 0
    with session_scope(rt.catalog_url) as session:
        rows = session.exec(select(IngestRequest).where(IngestRequest.batch == batch)).all()
        for row in rows:
            if row.series_orthanc_id not in outcomes:
                continue
            error = outcomes[row.series_orthanc_id]
            row.status = "failed" if error else "done"
            row.error = error
            row.updated_at = utcnow()
            session.add(row)
            closed += 1
    return closed
