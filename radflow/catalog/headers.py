"""Turn the DICOM headers of one series (as Orthanc returns them) into catalog records and
findings. Pure logic: no I/O, tolerant of odd real-world files (every oddity becomes a finding
with its reason, never an exception).

Input is Orthanc's ``/series/{id}/instances-tags?simplify`` answer (tag names -> strings,
multi-values joined by backslashes, sequences as lists of dicts, binary values as None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydicom.uid import UID

from radflow.catalog.geometry import check_geometry
from radflow.catalog.tags import FindingRecord, Tags, integer, number, text
from radflow.enums import SeriesStatus

SUPPORTED_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still readable)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
}
CROSS_SECTIONAL = {"CT", "MR", "PT", "NM"}


@dataclass
class InstanceRecord:
    orthanc_id: str
    sop_instance_uid: str
    instance_number: int | None
    sop_class_uid: str | None
    transfer_syntax: str | None
    position_z: float | None = None


@dataclass
class ParsedSeries:
    """Everything the catalog stores about one series."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instances: list[InstanceRecord]
    findings: list[FindingRecord] = field(default_factory=list)

    @property
    def status(self) -> SeriesStatus:
        return SeriesStatus.worst(f.severity for f in self.findings)


def parse_date(value: str | None) -> date | None:
    """DICOM DA (``YYYYMMDD``; the retired ``YYYY.MM.DD`` too); None when invalid."""
    if not value:
        return None
    digits = value.replace(".", "").replace("-", "").strip()
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def age_at_study(patient_age: str | None, birth: date | None, study: date | None) -> float | None:
    """Age in years at the study: from PatientAge (``054Y``, ``006M``...), else from dates."""
    if patient_age and (m := _AGE.match(patient_age.strip())):
        return round(int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2)], 2)
    if birth and study and study >= birth:
        return round((study - birth).days / 365.25, 2)
    return None


def sop_class_name(uid: str | None) -> str:
    return UID(uid).name if uid else "unknown SOP class"


def is_image_storage(uid: str | None) -> bool:
    return "Image Storage" in sop_class_name(uid)


def source_series_uid(tags: Tags) -> str | None:
    """The series a derived object (SEG, SR, RTSTRUCT, presentation state) was made from."""

    def first(seq: Any, *path: str) -> Any:
        node = seq
        for key in path:
            if isinstance(node, list):
                node = node[0] if node else None
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node

    candidates = [
        first(tags, "ReferencedSeriesSequence", "SeriesInstanceUID"),  # SEG, PR
        first(tags, "CurrentRequestedProcedureEvidenceSequence", "ReferencedSeriesSequence",
              "SeriesInstanceUID"),  # SR
        first(tags, "ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence",
              "RTReferencedSeriesSequence", "SeriesInstanceUID"),  # RTSTRUCT
    ]
    return next((c for c in candidates if isinstance(c, str) and c), None)


def parse_series(
    series_orthanc_id: str,
    tags_by_instance: dict[str, Tags],
    transfer_syntaxes: dict[str, str | None],
    orthanc_state: str | None = None,
    unreadable: dict[str, str] | None = None,
) -> ParsedSeries:
    """Build the catalog records of one series and its findings.

    ``unreadable`` maps instances whose file Orthanc could not read to the reason; their tags
    are those of Orthanc's index (identifiers only), and they are left out of the geometry
    checks.
    """
    unreadable = unreadable or {}
    ids = sorted(tags_by_instance,
                 key=lambda i: (number(tags_by_instance[i], "InstanceNumber") or 0, i))
    readable = [i for i in ids if i not in unreadable]
    first = tags_by_instance[readable[0]] if readable else {}
    findings: list[FindingRecord] = []
    if unreadable:
        reason = next(iter(unreadable.values()))
        findings.append(FindingRecord(
            "unreadable_file", "error",
            f"{len(unreadable)} of {len(ids)} instance(s) could not be read from Orthanc's "
            f"storage ({reason}); the others were cataloged",
            next(iter(unreadable)) if len(unreadable) == 1 else None))

    birth = parse_date(text(first, "PatientBirthDate"))
    study_date = parse_date(text(first, "StudyDate"))
    if text(first, "StudyDate") and study_date is None:
        findings.append(FindingRecord("bad_value", "warning",
                                      f"StudyDate {text(first, 'StudyDate')!r} is not a valid date"))
    age = age_at_study(text(first, "PatientAge"), birth, study_date)
    patient_id = text(first, "PatientID")
    if patient_id is None:
        findings.append(FindingRecord("missing_patient_id", "warning",
                                      "PatientID is missing or empty: the series cannot be "
                                      "linked to other studies of the same patient"))
    sex = (text(first, "PatientSex") or "").upper() or None
    contrast_agent = text(first, "ContrastBolusAgent")
    modality = (text(first, "Modality") or "").upper() or None
    sop_class = text(first, "SOPClassUID")

    instances = [
        InstanceRecord(
            orthanc_id=i,
            sop_instance_uid=text(tags_by_instance[i], "SOPInstanceUID") or "",
            instance_number=integer(tags_by_instance[i], "InstanceNumber"),
            sop_class_uid=text(tags_by_instance[i], "SOPClassUID"),
            transfer_syntax=transfer_syntaxes.get(i),
        )
        for i in ids
    ]
    findings += _object_findings(instances, modality, sop_class)
    series = {
        "orthanc_id": series_orthanc_id,
        "series_uid": text(first, "SeriesInstanceUID") or "",
        "study_uid": text(first, "StudyInstanceUID") or "",
        "orthanc_state": orthanc_state,
        "modality": modality,
        "sop_class_uid": sop_class,
        "body_part": (text(first, "BodyPartExamined") or "").upper() or None,
        "series_description": text(first, "SeriesDescription"),
        "protocol_name": text(first, "ProtocolName"),
        "manufacturer": text(first, "Manufacturer"),
        "model": text(first, "ManufacturerModelName"),
        "field_strength": number(first, "MagneticFieldStrength"),
        "kvp": number(first, "KVP"),
        "slice_thickness": number(first, "SliceThickness"),
        "pixel_spacing": number(first, "PixelSpacing"),
        "rows": integer(first, "Rows"),
        "columns": integer(first, "Columns"),
        "num_instances": len(ids),
        "contrast_agent": contrast_agent,
        "contrast": bool(contrast_agent) and contrast_agent.upper() not in ("NONE", "NO"),
        "transfer_syntax": instances[0].transfer_syntax if instances else None,
        "study_date": study_date,
        "patient_sex": sex,
        "age_years": age,
        "source_series_uid": source_series_uid(first),
    }
    for level, tag in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID")):
        if readable and not text(first, tag):
            findings.append(FindingRecord(
                "missing_uid", "error", f"{tag} is empty: the {level} cannot be told apart from "
                f"other {level} without one; Orthanc holds it under an empty UID"))
    if is_image_storage(sop_class):
        geometry = check_geometry(tags_by_instance, readable, modality)
        series.update(geometry.columns())
        for inst in instances:
            inst.position_z = geometry.positions.get(inst.orthanc_id)
        findings += geometry.findings
    return ParsedSeries(
        patient={"patient_id": patient_id, "sex": sex, "birth_date": birth},
        study={"study_uid": series["study_uid"], "study_date": study_date,
               "study_description": text(first, "StudyDescription"), "age_years": age},
        series=series,
        instances=instances,
        findings=findings,
    )


def _object_findings(instances: list[InstanceRecord], modality: str | None,
                     sop_class: str | None) -> list[FindingRecord]:
    """Findings about the kind of object and its encoding."""
    findings = []
    if not is_image_storage(sop_class):
        findings.append(FindingRecord(
            "non_image", "info",
            f"{sop_class_name(sop_class)} ({modality or 'no modality'}) is not an image: "
            "cataloged, not usable as input to image pipelines"))
    classes = {i.sop_class_uid for i in instances}
    if len(classes) > 1:
        names = ", ".join(sorted(sop_class_name(c) for c in classes))
        findings.append(FindingRecord("mixed_sop_classes", "warning",
                                      f"the series mixes SOP classes: {names}"))
    unsupported: dict[str, list[str]] = {}
    for inst in instances:
        ts = inst.transfer_syntax
        if ts and ts not in SUPPORTED_TRANSFER_SYNTAXES:
            unsupported.setdefault(ts, []).append(inst.orthanc_id)
    for ts, members in unsupported.items():
        findings.append(FindingRecord(
            "unsupported_transfer_syntax", "warning",
            f"{len(members)} instance(s) use {sop_class_name(ts)} ({ts}), which radflow's "
            "image readers cannot decode; transcode them (e.g. with Orthanc's /modify) first",
            members[0] if len(members) == 1 else None))
    if any(i.transfer_syntax == "1.2.840.10008.1.2.2" for i in instances):
        findings.append(FindingRecord("retired_transfer_syntax", "info",
                                      "Explicit VR Big Endian is retired from the standard"))
    missing_uid = [i.orthanc_id for i in instances if not i.sop_instance_uid]
    if missing_uid:
        findings.append(FindingRecord("missing_tag", "error",
                                      f"{len(missing_uid)} instance(s) without SOPInstanceUID"))
    return findings


__all__ = ["FindingRecord", "InstanceRecord", "ParsedSeries", "age_at_study", "parse_date",
           "parse_series", "source_series_uid"]
