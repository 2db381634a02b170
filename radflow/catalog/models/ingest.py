"""The change watcher's bookkeeping: its cursor in Orthanc's ``/changes`` feed, the series it
saw arrive, and the ingest queue it hands to Prefect."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import enum_column, utcnow
from radflow.enums import RequestStatus


class WatcherState(SQLModel, table=True):
    """A named cursor or counter of the watcher (``orthanc-changes``: the feed's last sequence
    number; ``ingest-runs``: how many ingest runs it started, numbering their idempotency keys)."""

    name: str = Field(primary_key=True)
    last_seq: int = 0
    runs_started: int = 0
    active_run: str | None = None  # the ingest run currently claiming requests
    updated_at: datetime = Field(default_factory=utcnow)


class SettlingSeries(SQLModel, table=True):
    """A series Orthanc reported new and not yet stable. Orthanc forgets such series when it
    restarts (it never reports them stable then), so the watcher checks on any that stay here
    longer than Orthanc's stable age."""

    series_orthanc_id: str = Field(primary_key=True)
    seen_at: datetime = Field(default_factory=utcnow)


class IngestRequest(SQLModel, table=True):
    """One stable state of one series to catalog (the watcher's outbox).

    ``(series_orthanc_id, orthanc_state)`` is unique: a series in a given state (Orthanc's
    ``LastUpdate`` and its instance count) is requested once. Ingest runs claim pending requests
    (status ``batched``, with their ``flow_run_id`` and a claim number in ``batch``) and close
    them (``done`` or ``failed``); failed ones are retried up to three claims.
    """

    __table_args__ = (UniqueConstraint("series_orthanc_id", "orthanc_state"),)

    id: int | None = Field(default=None, primary_key=True)
    series_orthanc_id: str = Field(index=True)
    orthanc_state: str
    reason: str = "stable"  # stable, reconcile, settled, pushed, manual
    status: RequestStatus = Field(default=RequestStatus.PENDING,
                                  sa_column=enum_column(RequestStatus, default="pending",
                                                        index=True))
    batch: int | None = Field(default=None, index=True)
    flow_run_id: str | None = None
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
