"""The types that tasks take and return: plain, frozen, serializable dataclasses.

* :class:`SeriesRef`: a series in the site's Orthanc (the one series type of radflow: the
  Orthanc client returns it, cohorts select it, tasks take it).
* :class:`DerivedRef` and its kinds :class:`SegmentationRef` (a DICOM SEG) and
  :class:`ReportRef` (a DICOM SR with its :class:`FeatureTable`): a derived result recorded by
  the core result service, with its key, status and lineage.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SeriesRef:
    """A series in the site's Orthanc.

    Attributes:
        orthanc_id: Orthanc's identifier of the series (what identifies it at the site).
        series_uid: its SeriesInstanceUID.
        study_uid: its StudyInstanceUID.
        modality: DICOM Modality.
        description: SeriesDescription.
        study_orthanc_id: Orthanc's identifier of its study.
        instance_count: instances Orthanc holds (when known; not part of equality).
        is_stable: whether Orthanc calls it stable (when known; not part of equality).
    """

    orthanc_id: str
    series_uid: str
    study_uid: str = ""
    modality: str | None = None
    description: str | None = None
    study_orthanc_id: str = field(default="", compare=False)
    instance_count: int = field(default=0, compare=False)
    is_stable: bool = field(default=False, compare=False)

    @classmethod
    def from_orthanc(cls, body: dict[str, Any], study_uid: str = "") -> SeriesRef:
        """From Orthanc's JSON of a series (``/series/{id}`` or ``/tools/find`` expanded)."""
        tags = body.get("MainDicomTags", {})
        return cls(
            orthanc_id=body["ID"],
            series_uid=tags.get("SeriesInstanceUID", ""),
            study_uid=study_uid or body.get("ParentStudyInstanceUID", "")
            or body.get("RequestedTags", {}).get("StudyInstanceUID", ""),
            modality=tags.get("Modality"),
            description=tags.get("SeriesDescription"),
            study_orthanc_id=body.get("ParentStudy", ""),
            instance_count=len(body.get("Instances", [])),
            is_stable=bool(body.get("IsStable", False)),
        )


@dataclass
class FeatureTable:
    """Feature values: one row per (segment, feature)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    COLUMNS = ("source_series_uid", "segment_number", "segment_label", "feature", "code", "value",
               "unit")

    def value(self, segment_label: str, feature: str) -> float:
        """One value, by segment label and feature name.

        Raises:
            NotFound: no such segment or feature (the message lists what there is).
        """
        for row in self.rows:
            if row["segment_label"] == segment_label and row["feature"] == feature:
                return row["value"]
        from radflow.errors import NotFound

        labels = sorted({r["segment_label"] for r in self.rows})
        raise NotFound(f"no feature {feature!r} for segment {segment_label!r} (segments: "
                       f"{labels})", fix="use a feature and segment this table holds")

    def segments(self) -> list[str]:
        return sorted({r["segment_label"] for r in self.rows})

    def to_csv(self, path: str | Path, columns: tuple[str, ...] | None = None) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns or self.COLUMNS),
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_parquet(self, path: str | Path, columns: tuple[str, ...] | None = None) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        names = columns or self.COLUMNS
        table = pa.Table.from_pylist([{c: r.get(c) for c in names} for r in self.rows])
        pq.write_table(table, path)
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DerivedRef:
    """A derived result (a DICOM object in Orthanc, or a table) recorded by the core result
    service.

    Attributes:
        result_id: its row in the catalog's result table.
        key: ``sha256:...`` over its kind, input UIDs, algorithm, version and parameters' hash.
        kind: ``SEG``, ``SR``... (:class:`radflow.enums.ResultKind`).
        source: the image series it was made from.
        algorithm: what made it (a model name, ``pyradiomics``...).
        algorithm_version: the version of that algorithm.
        params_hash: hash of the parameters it ran with.
        status: draft, accepted, rejected, corrected or superseded.
        orthanc_id: the instance in Orthanc (None for a table-only result).
        sop_instance_uid: its SOPInstanceUID.
        series_uid: its SeriesInstanceUID.
        cached: True when an earlier run had made it (not part of equality).
    """

    result_id: int
    key: str
    kind: str
    source: SeriesRef
    algorithm: str
    algorithm_version: str
    params_hash: str = ""
    status: str = "draft"
    orthanc_id: str | None = None
    sop_instance_uid: str | None = None
    series_uid: str | None = None
    cached: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class SegmentationRef(DerivedRef):
    """A DICOM SEG made from ``source``; ``segments`` maps segment number -> label."""

    segments: dict[int, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ReportRef(DerivedRef):
    """A DICOM SR (TID 1500 measurement report) with the feature values it carries."""

    features: FeatureTable = field(default_factory=FeatureTable, compare=False, hash=False)


REF_TYPES: dict[str, type[DerivedRef]] = {"SEG": SegmentationRef, "SR": ReportRef}
