"""What the site's Orthanc holds, in the terms a researcher filters on.

One row per patient, study, series and instance, keyed by Orthanc's identifier. Orthanc derives
its identifiers from hashes of the PatientID and the UIDs, so one StudyInstanceUID under two
patients is two studies there, and here: UIDs are indexed, never unique, and a UID shared by
resources that Orthanc keeps apart is a finding on every series involved.

The series table carries copies of the study- and patient-level fields that cohorts filter on
(study date, sex, age at study): a cohort query touches one table, like a search index.
Indexes are few on purpose: on columns of low selectivity (age, slice thickness, vendor) an index
makes SQLite's planner trade one fast scan for many random lookups (measured in
bench/bench_cohort.py: 78 ms with an index on age, 25 ms without, over 100,000 series).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import enum_column, utcnow
from radflow.enums import SeriesStatus, Severity


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True, index=True)
    patient_id: str | None = Field(default=None, index=True)  # DICOM PatientID (may be absent)
    sex: str | None = None
    birth_date: date | None = None


class Study(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    orthanc_id: str = Field(unique=True, index=True)
    study_uid: str = Field(index=True)  # not unique: Orthanc may hold it under two patients
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
    series_uid: str = Field(index=True)  # not unique: Orthanc may hold it under two studies
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
    status: SeriesStatus = Field(default=SeriesStatus.OK,
                                 sa_column=enum_column(SeriesStatus, default="ok"))

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
    severity: Severity = Field(sa_column=enum_column(Severity))
    message: str = Field(sa_column=Column(Text))
