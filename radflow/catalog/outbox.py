"""The ingest queue (the watcher's outbox): requests are claimed by ingest runs and closed by
them. Every step is one transaction, so a request is claimed by one run only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from radflow.catalog.models import IngestRequest, utcnow
from radflow.enums import RequestStatus

MAX_ATTEMPTS = 3


def add(session: Session, series_id: str, state: str, reason: str) -> bool:
    """Request the series in ``state`` unless that is requested already (a series in one state
    is cataloged once, whoever asks: Orthanc's StableSeries, a reconcile, a push). True if
    added."""
    exists = session.exec(select(IngestRequest.id).where(
        IngestRequest.series_orthanc_id == series_id,
        IngestRequest.orthanc_state == state)).first()
    if exists is not None:
        return False
    session.add(IngestRequest(series_orthanc_id=series_id, orthanc_state=state, reason=reason))
    session.flush()
    return True


def claim(session: Session, run_id: str, limit: int = 200) -> list[str]:
    """Claim up to ``limit`` pending requests for flow run ``run_id``; returns their series."""
    rows = session.exec(select(IngestRequest).where(IngestRequest.status == RequestStatus.PENDING)
                        .order_by(col(IngestRequest.id)).limit(limit)).all()
    if not rows:
        return []
    number = (session.exec(select(func.max(IngestRequest.batch))).one() or 0) + 1
    for row in rows:
        row.status, row.batch, row.flow_run_id = RequestStatus.BATCHED, number, run_id
        row.attempts += 1
        row.updated_at = utcnow()
        session.add(row)
    return sorted({row.series_orthanc_id for row in rows})


def close(session: Session, run_id: str, outcomes: dict[str, str | None]) -> int:
    """Mark the run's claimed requests done, or failed with the error; returns how many."""
    closed = 0
    for row in session.exec(select(IngestRequest).where(IngestRequest.flow_run_id == run_id,
                                                        IngestRequest.status == RequestStatus.BATCHED)):
        if row.series_orthanc_id in outcomes:
            error = outcomes[row.series_orthanc_id]
            row.status = RequestStatus.FAILED if error else RequestStatus.DONE
            row.error, row.updated_at = error, utcnow()
            session.add(row)
            closed += 1
    return closed


def release(session: Session, run_id: str, error: str) -> int:
    """A run ended without closing what it claimed: mark those requests failed (retried)."""
    released = 0
    for row in session.exec(select(IngestRequest).where(IngestRequest.flow_run_id == run_id,
                                                        IngestRequest.status == RequestStatus.BATCHED)):
        row.status, row.error, row.updated_at = RequestStatus.FAILED, error, utcnow()
        session.add(row)
        released += 1
    return released


def requeue_failed(session: Session, before: datetime) -> int:
    """Failed requests older than ``before`` go back to pending, up to MAX_ATTEMPTS claims."""
    rows = session.exec(select(IngestRequest).where(
        IngestRequest.status == RequestStatus.FAILED, IngestRequest.attempts < MAX_ATTEMPTS,
        IngestRequest.updated_at < before)).all()
    for row in rows:
        row.status, row.flow_run_id, row.updated_at = RequestStatus.PENDING, None, utcnow()
        session.add(row)
    return len(rows)


def open_runs(session: Session) -> set[str]:
    """Flow runs holding claimed, unclosed requests."""
    return set(session.exec(select(IngestRequest.flow_run_id).where(
        IngestRequest.status == RequestStatus.BATCHED, col(IngestRequest.flow_run_id).is_not(None))).all())


def counts(session: Session) -> dict[str, int]:
    return dict(session.exec(select(IngestRequest.status, func.count())
                             .group_by(IngestRequest.status)).all())
