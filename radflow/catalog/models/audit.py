"""The site's audit log: append-only, hash-chained (each event's hash covers the previous one)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow


class AuditEvent(SQLModel, table=True):
    """One event: who did what to which subject, and the chain hash that seals it."""

    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True)  # 1, 2, 3... without gaps
    time: datetime = Field(default_factory=utcnow)
    actor: str  # a reviewer's subject, "radflow:<service>", "cli:<user>"
    action: str = Field(index=True)  # review.requested, review.decided, result.status...
    subject: str = Field(index=True)  # what it is about, e.g. "result:12", "flow_run:<id>"
    detail: str = Field(default="{}", sa_column=Column(Text))  # canonical JSON
    prev_hash: str
    hash: str = Field(unique=True, index=True)
