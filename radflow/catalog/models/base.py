"""Helpers shared by the catalog's tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column

from radflow.enums import StrEnumType


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime | None) -> datetime | None:
    """A datetime read back from SQLite (which drops the zone) as the UTC time it was."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def enum_column(enum: Any, *, default: Any = None, index: bool = False,
                nullable: bool = False) -> Column:
    """A VARCHAR column that stores a str-Enum's value and loads it back as the Enum."""
    return Column(StrEnumType(enum), default=default, index=index, nullable=nullable)
