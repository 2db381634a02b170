"""Reading values out of Orthanc's simplified DICOM tags, tolerantly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Tags = dict[str, Any]


@dataclass
class FindingRecord:
    """Something odd about a series (or one instance of it), with the reason."""

    code: str
    severity: str
    message: str
    instance_orthanc_id: str | None = None


def text(tags: Tags, name: str) -> str | None:
    """A string value, stripped; None for absent, empty or binary values."""
    value = tags.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def number(tags: Tags, name: str, index: int = 0) -> float | None:
    """One numeric component of a DS/IS/US value; None if absent or not a number."""
    value = text(tags, name)
    if value is None:
        return None
    parts = value.split("\\")
    try:
        return float(parts[index])
    except (ValueError, IndexError):
        return None


def numbers(tags: Tags, name: str) -> list[float] | None:
    value = text(tags, name)
    if value is None:
        return None
    try:
        return [float(p) for p in value.split("\\")]
    except ValueError:
        return None
