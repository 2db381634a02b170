"""The outbox: effects that leave the site's processes (a post to the hub, a Prefect resume),
each written in the same transaction as the state change and the audit event that decided it,
then delivered until the receiver acknowledges (:mod:`radflow.outbox`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow


class OutboxEntry(SQLModel, table=True):
    """One effect to deliver.

    ``state``: ``pending`` (not acknowledged yet: delivered, or retried, by its deliverer),
    ``acknowledged`` (the receiver took it; ``answer`` says how, e.g. ``recorded`` or
    ``already``), ``refused`` (the receiver refused it for good, e.g. a run that ended before
    it could be resumed; ``answer`` says why).
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # hub.post or prefect.resume
    subject: str = Field(index=True)  # as in the audit log: job:<id>, review:<key>
    target: str  # the hub job id, or the flow run id
    payload: str = Field(sa_column=Column(Text, nullable=False))  # JSON, sent as it is
    state: str = Field(default="pending", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    done_at: datetime | None = None
    answer: str | None = Field(default=None, sa_column=Column(Text))  # the receiver's answer
