"""What the Orthanc client returns besides series (:class:`radflow.types.SeriesRef`): upload
outcomes and series states."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class UploadResult:
    """What Orthanc said about one uploaded file."""

    path: Path | None
    instance_id: str | None
    status: str  # "Success", "AlreadyStored" or "Failed"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("Success", "AlreadyStored")


def series_state(body: dict[str, Any]) -> str:
    """One state of a series in Orthanc: its ``LastUpdate`` and instance count. Orthanc does not
    update ``LastUpdate`` when an instance is deleted, hence the count."""
    return f"{body.get('LastUpdate') or ''}#{len(body.get('Instances', []))}"
