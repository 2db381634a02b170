"""Is the catalog in step with Orthanc? (for `radflow catalog wait`, the demo and the tests)"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from radflow.catalog import outbox
from radflow.catalog.db import session_scope
from radflow.catalog.models import Finding, IngestRequest, Series, SettlingSeries, WatcherState
from radflow.enums import RequestStatus, SeriesStatus, Severity
from radflow.errors import OrthancError, SiteError
from radflow.orthanc.client import OrthancClient, series_state
from radflow.watcher.core import CURSOR

OPEN = [RequestStatus.PENDING, RequestStatus.BATCHED]


def compare(orthanc: OrthancClient, catalog_url: str) -> tuple[bool, dict[str, Any]]:
    """Whether the catalog holds exactly Orthanc's series (with their instance counts), no
    ingest request is open, no series is settling and the watcher has read all of Orthanc's
    changes; and the numbers behind the answer, with the series in error. (A series deleted and
    received again holds the counts the catalog has before it is stable again: only the last
    two conditions tell that it is on its way.)"""
    states = orthanc.series_states()
    held = {k: v["Instances"] for k, v in states.items()}
    with session_scope(catalog_url) as session:
        cataloged = {oid: (n, state) for oid, n, state in session.exec(
            select(Series.orthanc_id, Series.num_instances, Series.orthanc_state)).all()}
        rows = {oid: n for oid, (n, _) in cataloged.items()}
        open_requests = session.exec(select(func.count()).select_from(IngestRequest).where(
            col(IngestRequest.status).in_(OPEN))).one()
        # a series Orthanc has not called stable yet, unless it is cataloged as Orthanc holds
        # it now (a push asked for it: `request_now`)
        settling = sum(1 for oid in session.exec(select(SettlingSeries.series_orthanc_id))
                       if oid not in states or states[oid]["State"] != cataloged.get(oid, (0, None))[1])
        cursor = session.get(WatcherState, CURSOR)
        errors = [{"orthanc_id": oid, "series_uid": uid, "reason": f"{code}: {message}"}
                  for oid, uid, code, message in session.exec(
                      select(Series.orthanc_id, Series.series_uid, Finding.code, Finding.message)
                      .join(Finding, Finding.series_pk == Series.id)
                      .where(Series.status == SeriesStatus.ERROR,
                             Finding.severity == Severity.ERROR))]
    differ = sorted(k for k in set(held) | set(rows) if held.get(k) != rows.get(k))
    unread = len(orthanc.changes(since=cursor.last_seq if cursor else 0, limit=1)["Changes"])
    info = {"orthanc_series": len(held), "catalog_series": len(rows),
            "open_requests": open_requests, "settling": settling, "unread_changes": unread > 0,
            "differ": differ[:5], "errors": errors}
    return open_requests == 0 and not differ and settling == 0 and not unread, info


def request_now(orthanc: OrthancClient, catalog_url: str, series_ids: list[str],
                reason: str = "pushed") -> int:
    """Ask for these series to be cataloged now, as Orthanc holds them, without waiting for
    Orthanc to call them stable (its stable age: 10 s by default). For a sender that knows it
    has sent everything (`radflow data push`). Should more instances arrive later, Orthanc's
    StableSeries asks again, for the new state; the same state is never cataloged twice.
    Returns how many requests were added."""
    states = {}
    for sid in series_ids:
        try:
            states[sid] = series_state(orthanc.resource("series", sid))
        except OrthancError as exc:
            if exc.status != 404:  # (deleted meanwhile: nothing to catalog)
                raise
    added = 0
    with session_scope(catalog_url) as session:
        for sid, state in states.items():
            try:
                with session.begin_nested():
                    added += outbox.add(session, sid, state, reason)
            except IntegrityError:  # the watcher asked for the same state at that moment
                pass
    return added


def _failed_requests(catalog_url: str, series: list[str]) -> dict[str, str]:
    with session_scope(catalog_url) as session:
        found = session.exec(select(IngestRequest.series_orthanc_id, IngestRequest.error).where(
            col(IngestRequest.series_orthanc_id).in_(series),
            IngestRequest.status == RequestStatus.FAILED)).all()
    return {oid: error or "failed" for oid, error in found}


def wait_in_step(orthanc: OrthancClient, catalog_url: str, timeout: float = 180,
                 quiet_seconds: float = 3.0) -> dict[str, Any]:
    """Wait until the catalog is in step with Orthanc (:func:`compare`), and stays so for
    ``quiet_seconds`` (a sender may still be sending). The answer names the series cataloged
    in error, with why.

    Raises:
        SiteError: not in step within ``timeout`` seconds (the message names the series that
            differ and why their ingest failed, when it did).
    """
    deadline = time.monotonic() + timeout
    since = None
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ok, info = compare(orthanc, catalog_url)
        if ok:
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet_seconds:
                return info
        else:
            since = None
        time.sleep(0.5)
    failed = _failed_requests(catalog_url, info.get("differ", []))
    why = "; ".join(f"{k}: {v}" for k, v in failed.items())
    raise SiteError(
        f"the catalog did not catch up with Orthanc within {timeout:.0f} s: "
        f"{info.get('catalog_series')} of {info.get('orthanc_series')} series, "
        f"{info.get('open_requests')} request(s) open, {info.get('settling')} series "
        f"settling, differing: {info.get('differ')}"
        + (f"; failed: {why}" if why else ""),
        fix="check the watcher and worker (`radflow site status`, `radflow site logs -c watcher`)",
    )
