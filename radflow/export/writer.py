"""Writing a de-identified set: each dataset through the :class:`Deidentifier` into a folder
laid out by pseudonymous patient, study and series, and a manifest of what was written (a
SHA-256 per file, the profile and options, the cohort's hash, radflow's version) and of what
was held back and why."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radflow.export.deidentify import Deidentifier

MANIFEST = "manifest.json"
FORMAT = "radflow.export/1"


@dataclass
class Held:
    """A series that did not leave: its original UID stays at the site (``series_uid``); the
    manifest names it by its pseudonymous UID."""

    series_uid: str
    exported_uid: str
    modality: str
    reason: str
    instances: int = 0


@dataclass
class WriteReport:
    files: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, Held] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)  # pseudonym -> original id: site only

    @property
    def instances(self) -> int:
        return len(self.files)


def write_dataset(ds: Any, deid: Deidentifier, out: Path, report: WriteReport) -> Path | None:
    """De-identify ``ds`` and write it under ``out``; None when its series is held back."""
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    reason = report.held[series_uid].reason if series_uid in report.held else deid.hold_reason(ds)
    if reason:
        held = report.held.setdefault(series_uid, Held(
            series_uid=series_uid, exported_uid=deid.uid(series_uid),
            modality=str(ds.get("Modality", "")), reason=reason))
        held.instances += 1
        return None
    deid.apply(ds)
    relative = Path(str(ds.PatientID) or "unknown", ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    f"{ds.SOPInstanceUID}.dcm")
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    report.files.append({"path": relative.as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
                         "bytes": len(data), "modality": str(ds.get("Modality", "")),
                         "sop_class_uid": str(ds.SOPClassUID), "series_uid": ds.SeriesInstanceUID})
    return path


def write_set(datasets: Iterable[Any], deid: Deidentifier, out: Path, *,
              cohort_hash: str = "", project: str = "") -> tuple[WriteReport, dict[str, Any]]:
    """Write every dataset; then the manifest (``out/manifest.json``), returned with the
    report."""
    from radflow import __version__

    out.mkdir(parents=True, exist_ok=True)
    report = WriteReport()
    for ds in datasets:
        write_dataset(ds, deid, out, report)
    report.patients = dict(deid.patients)
    manifest = {
        "format": FORMAT, "radflow": __version__, "project": project,
        "profile": "PS3.15 Annex E basic application level confidentiality profile",
        "options": list(deid.options), "safe_private": list(deid.safe_private),
        "pixel_rules": len(deid.pixel_rules), "cohort_hash": cohort_hash,
        "instances": report.instances,
        "series": len({f["series_uid"] for f in report.files}),
        "patients": len(report.patients),
        "files": sorted(report.files, key=lambda f: f["path"]),
        "held_back": [{"series_uid": h.exported_uid, "modality": h.modality, "reason": h.reason,
                       "instances": h.instances} for h in report.held.values()],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report, manifest


def manifest_hash(out: Path) -> str:
    return hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
