"""Reading values out of Orthanc's simplified DICOM tags, tolerantly."""

from __future__ import annotations

import math
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
        number_ = float(parts[index])
    except (ValueError, IndexError):
        return None
    return number_ if math.isfinite(number_) else None


def numbers(tags: Tags, name: str) -> list[float] | None:
    value = text(tags, name)
    if value is None:
        return None
    try:
        values = [float(p) for p in value.split("\\")]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def integer(tags: Tags, name: str) -> int | None:
    """An IS/US value as an int; None if absent, not a number, or beyond 64 bits."""
    value = number(tags, name)
    if value is None or abs(value) >= 2**63:
        return None
    return int(value)
