"""The types that plugin tasks take and return (plain, serializable dataclasses)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SeriesRef:
    """A series in the site's Orthanc."""

    orthanc_id: str
    series_uid: str
    study_uid: str = ""
    modality: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class SegmentationRef:
    """A DICOM SEG stored in the site's Orthanc, made from ``source``."""

    orthanc_id: str  # the SEG instance
    sop_instance_uid: str
    series_uid: str
    source: SeriesRef
    segments: dict[int, str]  # segment number -> label
    algorithm: str  # name
    algorithm_version: str


@dataclass(frozen=True)
class ReportRef:
    """A DICOM SR (TID 1500 measurement report) stored in the site's Orthanc."""

    orthanc_id: str
    sop_instance_uid: str
    series_uid: str
    segmentation: SegmentationRef


@dataclass
class FeatureTable:
    """Feature values: one row per (segment, feature)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    COLUMNS = ("source_series_uid", "segment_number", "segment_label", "feature", "value", "unit")

    def value(self, segment_label: str, feature: str) -> float:
        for row in self.rows:
            if row["segment_label"] == segment_label and row["feature"] == feature:
                return row["value"]
        raise KeyError(f"no feature {feature!r} for segment {segment_label!r}")

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(self.COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_parquet(self, path: str | Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        table = pa.Table.from_pylist([{c: r.get(c) for c in self.COLUMNS} for r in self.rows])
        pq.write_table(table, path)
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
