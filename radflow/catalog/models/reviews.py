"""Review steps: a person's decision on a derived result, asked for by a suspended case run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import enum_column, utcnow
from radflow.enums import ReviewStatus


class Review(SQLModel, table=True):
    """One review step of one case: who should decide, by when, and what was decided.

    A decision is recorded here (with its audit event, in one transaction) when it is made;
    the case run, resumed through the outbox, applies it and sets ``applied_at``.
    """

    __tablename__ = "review"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)  # the suspend key: stable across re-execution
    flow_run_id: str = Field(index=True)  # the suspended case run
    result_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("result.id", ondelete="SET NULL"), index=True))
    source_series_uid: str = Field(index=True)
    assignee: str = Field(index=True)  # a user's subject, or "role:<role>"
    status: ReviewStatus = Field(default=ReviewStatus.OPEN,
                                 sa_column=enum_column(ReviewStatus, default="open", index=True))
    on_expiry: str = "exclude"  # exclude or continue
    due_at: datetime
    remind_at: datetime | None = None
    reminded_at: datetime | None = None
    decision: str | None = None  # accept, reject, corrected, expired
    reviewer: str | None = None
    comment: str | None = Field(default=None, sa_column=Column(Text))
    corrected_seg_uid: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    # when the case run applied the decision (status changes on the result): once, by the run
    applied_at: datetime | None = None
