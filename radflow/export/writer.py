"""Writing a de-identified set: each dataset through the :class:`Deidentifier` into a folder
laid out by pseudonymous patient, study and series, and a manifest of what was written (a
SHA-256 per file, the profile and options, the cohort's hash, radflow's version) and of what
was held back and why."""

from __future__ import annotations

import hashlib
import io
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


def one(ds: Any, deid: Deidentifier, out: Path) -> dict[str, Any]:
    """De-identify ``ds`` and write it under ``out``: ``{"file": ...}`` with its manifest
    entry, or ``{"held": ...}`` when it may not leave; with the pseudonym pair it made."""
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    reason = deid.hold_reason(ds)
    if reason:
        return {"held": {"series_uid": series_uid, "exported_uid": deid.uid(series_uid),
                         "modality": str(ds.get("Modality", "")), "reason": reason}}
    patient_id = str(ds.get("PatientID", "") or "")
    deid.apply(ds)
    relative = Path(str(ds.PatientID) or "unknown", ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    f"{ds.SOPInstanceUID}.dcm")
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    path.write_bytes(data)
    return {"file": {"path": relative.as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
                     "bytes": len(data), "modality": str(ds.get("Modality", "")),
                     "sop_class_uid": str(ds.SOPClassUID),
                     "series_uid": str(ds.SeriesInstanceUID)},
            "patient": [str(ds.PatientID), patient_id] if patient_id else None}


def add(report: WriteReport, outcome: dict[str, Any]) -> None:
    if "held" in outcome:
        held = outcome["held"]
        entry = report.held.setdefault(held["series_uid"], Held(
            series_uid=held["series_uid"], exported_uid=held["exported_uid"],
            modality=held["modality"], reason=held["reason"]))
        entry.instances += 1
        return
    report.files.append(outcome["file"])
    if outcome["patient"]:
        pseudonym, patient_id = outcome["patient"]
        report.patients[pseudonym] = patient_id


def write_set(datasets: Iterable[Any], deid: Deidentifier, out: Path, *,
              cohort_hash: str = "", project: str = "") -> tuple[WriteReport, dict[str, Any]]:
    """Write every dataset (in this process); then the manifest (``out/manifest.json``),
    returned with the report."""
    out.mkdir(parents=True, exist_ok=True)
    report = WriteReport()
    for ds in datasets:
        add(report, one(ds, deid, out))
    return report, finish(report, deid, out, cohort_hash, project)


def finish(report: WriteReport, deid: Deidentifier, out: Path, cohort_hash: str,
            project: str) -> dict[str, Any]:
    """Drop what was written of a series an instance of which was held back (a series leaves
    whole or not at all); write the manifest."""
    from radflow import __version__

    held = {h.exported_uid: h for h in report.held.values()}
    for entry in [f for f in report.files if f["series_uid"] in held]:
        (out / entry["path"]).unlink(missing_ok=True)
        report.files.remove(entry)
        held[entry["series_uid"]].instances += 1
    manifest = {
        "format": FORMAT, "radflow": __version__, "project": project,
        "profile": "PS3.15 Annex E basic application level confidentiality profile",
        "options": list(deid.options), "safe_private": list(deid.safe_private),
        "pixel_rules": len(deid.pixel_rules), "cohort_hash": cohort_hash,
        "instances": report.instances,
        "series": len({f["series_uid"] for f in report.files}),
        "patients": len({f["path"].split("/")[0] for f in report.files}),
        "files": sorted(report.files, key=lambda f: f["path"]),
        "held_back": [{"series_uid": h.exported_uid, "modality": h.modality, "reason": h.reason,
                       "instances": h.instances} for h in report.held.values()],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def manifest_hash(out: Path) -> str:
    return hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
