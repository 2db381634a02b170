"""Saved cohorts, and the membership a run pinned."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow


class CohortRecord(SQLModel, table=True):
    """A saved cohort: a portable JSON filter and its content hash."""

    __tablename__ = "cohort"

    name: str = Field(primary_key=True)
    description: str | None = None
    definition: str = Field(sa_column=Column(Text))  # canonical JSON
    content_hash: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class CohortPin(SQLModel, table=True):
    """The series a run selected, fixed once: a resumed, retried or federated run works on the
    same series even if the catalog changed meanwhile."""

    __tablename__ = "cohort_pin"

    run_key: str = Field(primary_key=True)  # the flow run id, or a federated job id
    cohort: str | None = None  # the cohort's name at this site, if it was a saved one
    content_hash: str = Field(index=True)  # of the definition (or of the explicit UID list)
    definition: str = Field(sa_column=Column(Text))  # canonical JSON
    series: str = Field(sa_column=Column(Text))  # JSON list of {orthanc_id, series_uid}
    created_at: datetime = Field(default_factory=utcnow)
