"""The site agent's jobs: one row per job the hub queued for this site, from its arrival to the
one post of its result. The row is what makes the agent restart-safe: a restarted agent finds
the flow run it started, the steward's decisions and whether it posted already."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow


class FederationJob(SQLModel, table=True):
    """One hub job at this site.

    ``state``: ``received`` (seen, not yet run), ``running`` (its site part runs),
    ``pending_release`` (gated; a steward decides), ``sending`` (its outcome is decided and
    audited; the post waits in the outbox), ``posted`` (the hub acknowledged its result),
    ``undeliverable`` (the hub refused the post for good, e.g. its deadline passed).
    """

    __tablename__ = "federation_job"

    id: str = Field(primary_key=True)  # the hub's job id (32 hex digits)
    study: str | None = Field(default=None, index=True)
    version: str | None = None
    state: str = Field(default="received", index=True)
    accepted_by: str | None = None  # job mode manual: the steward who accepted it
    flow_run_id: str | None = None  # the site part's run on the site's Prefect
    release: str | None = Field(default=None, sa_column=Column(Text))  # JSON, after the gate
    release_hash: str | None = None  # sha256 of that JSON (what a steward approves)
    suppressed: str | None = Field(default=None, sa_column=Column(Text))  # JSON list
    policy: str | None = Field(default=None, sa_column=Column(Text))  # JSON: what the gate applied
    decision: str | None = None  # approved or declined (manual release)
    decision_hash: str | None = None  # the release hash the decision was about
    decided_by: str | None = None
    outcome: str | None = None  # once posted: "released" or the refusal code
    received_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    posted_at: datetime | None = None
