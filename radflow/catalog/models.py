"""The site catalog: what Orthanc holds, in the terms a researcher filters on.

One row per patient, study, series and instance (keyed by Orthanc's identifiers and the DICOM
UIDs), DICOM findings per series, and the watcher's bookkeeping (its cursor in Orthanc's
``/changes`` feed and the ingest requests it hands to Prefect).

The series table carries copies of the study- and patient-level fields that cohorts filter on
(study date, sex, age at study): a cohort query touches one table, like a search index.
Indexes are few on purpose: on columns of low selectivity (age, slice thickness, vendor) an index
makes SQLite's planner trade one fast scan for many random lookups (measured in
bench/bench_cohort.py: 78 ms with an index on age, 25 ms without, over 100,000 series).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True, index=True)
    patient_id: str | None = Field(default=None, index=True)  # DICOM PatientID (may be absent)
    sex: str | None = None
    birth_date: date | None = None


class Study(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True, index=True)
    study_uid: str = Field(unique=True, index=True)
    patient_pk: int = Field(foreign_key="patient.id", index=True)
    study_date: date | None = None
    study_description: str | None = None
    age_years: float | None = None


class Series(SQLModel, table=True):
    __table_args__ = (
        Index("ix_series_modality_date", "modality", "study_date"),
    )

    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True, index=True)
    series_uid: str = Field(unique=True, index=True)
    study_pk: int = Field(foreign_key="study.id", index=True)
    study_uid: str = Field(index=True)
    orthanc_state: str | None = None  # the series' state in Orthanc when it was ingested

    modality: str | None = Field(default=None, index=True)
    sop_class_uid: str | None = None
    body_part: str | None = Field(default=None, index=True)
    series_description: str | None = None
    protocol_name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    field_strength: float | None = None
    kvp: float | None = None
    slice_thickness: float | None = None
    pixel_spacing: float | None = None  # row spacing, mm
    rows: int | None = None
    columns: int | None = None
    num_instances: int = 0
    contrast_agent: str | None = None
    contrast: bool = False
    transfer_syntax: str | None = None

    # copies for one-table cohort queries
    study_date: date | None = None  # indexed with modality (ix_series_modality_date)
    patient_sex: str | None = None
    age_years: float | None = None

    # derived checks
    geometry_consistent: bool | None = None
    uniform_spacing: bool | None = None
    slice_spacing: float | None = None
    missing_slices: int = 0
    status: str = "ok"  # ok, warning, error (worst finding)

    # results produced later (SEG, SR, RTSTRUCT...) point at the series they were made from
    source_series_uid: str | None = Field(default=None, index=True)
    ingested_at: datetime = Field(default_factory=utcnow)


class Instance(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True)
    sop_instance_uid: str = Field(index=True)
    series_pk: int = Field(foreign_key="series.id", index=True)
    instance_number: int | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None
    position_z: float | None = None  # along the slice normal, mm


class Finding(SQLModel, table=True):
    """Something odd about a series or one of its instances, with the reason."""

    id: int | None = Field(default=None, primary_key=True)
    series_pk: int = Field(foreign_key="series.id", index=True)
    instance_orthanc_id: str | None = None
    code: str = Field(index=True)
    severity: str  # info, warning, error
    message: str = Field(sa_column=Column(Text))


class WatcherState(SQLModel, table=True):
    """The change watcher's durable cursor in Orthanc's /changes feed."""

    name: str = Field(primary_key=True)
    last_seq: int = 0
    runs_started: int = 0  # numbers the ingest runs the watcher starts (their idempotency keys)
    active_run: str | None = None  # the ingest run currently claiming requests
    updated_at: datetime = Field(default_factory=utcnow)


class SettlingSeries(SQLModel, table=True):
    """A series Orthanc reported new and not yet stable. Orthanc forgets such series when it
    restarts (it never reports them stable then), so the watcher checks on any that stay here
    longer than Orthanc's stable age."""

    series_orthanc_id: str = Field(primary_key=True)
    seen_at: datetime = Field(default_factory=utcnow)


class IngestRequest(SQLModel, table=True):
    """One stable state of one series to catalog (the watcher's outbox).

    ``(series_orthanc_id, orthanc_state)`` is unique: a series in a given state (Orthanc's
    ``LastUpdate`` and its instance count) is requested once. Ingest runs claim pending requests
    (status ``batched``, with their ``flow_run_id`` and a claim number in ``batch``) and close
    them (``done`` or ``failed``); failed ones are retried up to three claims.
    """

    __table_args__ = (UniqueConstraint("series_orthanc_id", "orthanc_state"),)

    id: int | None = Field(default=None, primary_key=True)
    series_orthanc_id: str = Field(index=True)
    orthanc_state: str
    reason: str = "stable"  # stable, reconcile, manual
    status: str = Field(default="pending", index=True)  # pending, batched, done, failed
    batch: int | None = Field(default=None, index=True)
    flow_run_id: str | None = None
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CohortRecord(SQLModel, table=True):
    """A saved cohort: a portable JSON filter and its content hash."""

    __tablename__ = "cohort"

    name: str = Field(primary_key=True)
    description: str | None = None
    definition: str = Field(sa_column=Column(Text))  # canonical JSON
    content_hash: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class DerivedResult(SQLModel, table=True):
    """A result radflow made from a series and stored in Orthanc (a SEG, an SR). The unique key
    is the cache key of the segment-and-quantify flow: the same source with the same algorithm
    version is never computed twice."""

    __tablename__ = "result"
    __table_args__ = (UniqueConstraint("kind", "source_series_uid", "algorithm", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # SEG, SR
    source_series_uid: str = Field(index=True)
    algorithm: str
    version: str  # model version, or the hash of the parameters
    orthanc_id: str
    sop_instance_uid: str
    series_uid: str
    detail: str = Field(default="{}", sa_column=Column(Text))  # JSON: segments, statistics
    created_at: datetime = Field(default_factory=utcnow)


class FeatureValue(SQLModel, table=True):
    """One feature of one segment, as written into an SR (the catalog's feature table)."""

    __tablename__ = "feature"

    id: int | None = Field(default=None, primary_key=True)
    result_pk: int = Field(foreign_key="result.id", index=True)
    source_series_uid: str = Field(index=True)
    segment_number: int
    segment_label: str
    feature: str = Field(index=True)
    value: float
    unit: str
