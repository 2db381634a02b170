"""The closed vocabularies of radflow as str-Enums. Each accepts its string value (``"ok"``,
``SeriesStatus("ok")``) and is stored as that string, so the database and JSON stay readable."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import String
from sqlalchemy.types import TypeDecorator


class Severity(StrEnum):
    """How bad a finding is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return ("info", "warning", "error").index(self.value)


class SeriesStatus(StrEnum):
    """A series' worst finding (``ok``: none worse than information)."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"

    @classmethod
    def worst(cls, severities: Any) -> SeriesStatus:
        rank = max((Severity(s).rank for s in severities), default=0)
        return (cls.OK, cls.WARNING, cls.ERROR)[rank]


class RequestStatus(StrEnum):
    """Where an ingest request stands."""

    PENDING = "pending"
    BATCHED = "batched"
    DONE = "done"
    FAILED = "failed"


class ResultKind(StrEnum):
    """What a derived result is."""

    SEG = "SEG"
    SR = "SR"
    RTSTRUCT = "RTSTRUCT"
    FEATURES = "FEATURES"  # a feature table with no DICOM object
    OTHER = "OT"


class ResultStatus(StrEnum):
    """The life of a derived result.

    ``draft`` (made, not reviewed) -> ``accepted`` | ``rejected`` | ``corrected`` (a clinician
    made a new version, linked to this one as its parent) | ``superseded`` (a newer version of
    the algorithm made it again).
    """

    DRAFT = "draft"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CORRECTED = "corrected"
    SUPERSEDED = "superseded"


class ReviewStatus(StrEnum):
    """Where a review step stands."""

    OPEN = "open"
    DECIDED = "decided"
    EXPIRED = "expired"


class StrEnumType(TypeDecorator):
    """A column holding a str-Enum as its value (plain VARCHAR; loads back as the Enum)."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], *args: Any, **kwargs: Any) -> None:
        self.enum = enum
        super().__init__(*args, **kwargs)

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self.enum(value)
