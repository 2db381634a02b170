"""Tasks of the ingest flow: read a series' headers from Orthanc and catalog it; claim and close
requests of the site's ingest queue."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from radflow.catalog import outbox
from radflow.catalog.db import session_scope
from radflow.catalog.headers import parse_series
from radflow.catalog.store import record_failed_series, upsert_series
from radflow.errors import OrthancError
from radflow.orthanc.client import series_state
from radflow.runtime import site_runtime
from radflow.tasks.retry import retry_transient


@task(name="catalog-series", retries=3, retry_delay_seconds=[2, 5, 15],
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
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
    tags, unreadable = read_headers(orthanc, series)
    syntaxes = transfer_syntaxes(orthanc, {i: t for i, t in tags.items() if i not in unreadable})
    study = orthanc.resource("studies", series["ParentStudy"])
    parsed = parse_series(series_id, tags, syntaxes, series_state(series), unreadable=unreadable)
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


def record_failure(series_id: str, reason: str, site: str | None = None) -> bool:
    """Catalog a series that failed, as an ``error`` row with the reason (from Orthanc's index).
    Returns False when Orthanc no longer holds it; raises OrthancError when Orthanc cannot be
    asked (the request stays failed and is retried)."""
    rt = site_runtime(site)
    try:
        series = rt.orthanc.resource("series", series_id)
        study = rt.orthanc.resource("studies", series["ParentStudy"])
    except OrthancError as exc:
        if exc.status == 404:
            return False
        raise
    with session_scope(rt.catalog_url) as session:
        record_failed_series(session, series, study, reason)
    return True


def read_headers(orthanc: Any, series: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The headers of every instance of a series, in one request. If Orthanc cannot read one of
    its files (a corrupt or missing file in its storage), read them one by one: the unreadable
    instances get the tags of Orthanc's index and a reason; the rest is read normally."""
    try:
        return orthanc.series_tags(series["ID"]), {}
    except OrthancError as exc:
        if exc.status is None or exc.status == 404:
            raise  # Orthanc unreachable (retried) or the series is gone
    tags: dict[str, dict[str, Any]] = {}
    unreadable: dict[str, str] = {}
    for instance_id in series["Instances"]:
        try:
            tags[instance_id] = orthanc.instance_tags(instance_id)
        except OrthancError as exc:
            if exc.status is None:
                raise
            unreadable[instance_id] = exc.message
            tags[instance_id] = orthanc.resource("instances", instance_id).get("MainDicomTags", {})
    return tags, unreadable


def transfer_syntaxes(orthanc: Any, tags: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """Each instance's transfer syntax. Orthanc answers one instance per request, so ask for the
    first and last instance of each SOP class; only if those differ, ask for every instance
    (a series stored in one go has one encoding: 2 requests instead of hundreds)."""
    ids = sorted(tags)
    by_class: dict[str, list[str]] = {}
    for i in ids:
        by_class.setdefault(str(tags[i].get("SOPClassUID")), []).append(i)
    probes = sorted({m for members in by_class.values() for m in (members[0], members[-1])})
    known = orthanc.transfer_syntaxes(probes)
    if len(set(known.values())) > 1:
        return orthanc.transfer_syntaxes(ids)
    only = next(iter(known.values()), None)
    return {i: only for i in ids}


def claim_requests(run_id: str, site: str | None = None, limit: int = 200) -> list[str]:
    """Claim up to ``limit`` pending requests of the site's ingest queue for this run (not a
    task: a run polls the queue several times a second while it waits for work)."""
    with session_scope(site_runtime(site).catalog_url) as session:
        return outbox.claim(session, run_id, limit)


def close_requests(run_id: str, outcomes: dict[str, str | None], site: str | None = None) -> int:
    """Mark the run's claimed requests done (or failed, with the error)."""
    with session_scope(site_runtime(site).catalog_url) as session:
        return outbox.close(session, run_id, outcomes)
