"""What the Orthanc client returns: series, upload outcomes, series states."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SeriesInfo:
    """One series as Orthanc sees it (main DICOM tags and Orthanc identifiers)."""

    orthanc_id: str
    series_uid: str
    study_uid: str
    study_orthanc_id: str
    modality: str | None
    description: str | None
    instance_count: int
    is_stable: bool

    @classmethod
    def from_orthanc(cls, body: dict[str, Any], study_uid: str = "") -> SeriesInfo:
        tags = body.get("MainDicomTags", {})
        return cls(
            orthanc_id=body["ID"],
            series_uid=tags.get("SeriesInstanceUID", ""),
            study_uid=study_uid or body.get("ParentStudyInstanceUID", ""),
            study_orthanc_id=body.get("ParentStudy", ""),
            modality=tags.get("Modality"),
            description=tags.get("SeriesDescription"),
            instance_count=len(body.get("Instances", [])),
            is_stable=bool(body.get("IsStable", False)),
        )


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
