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

from sqlalchemy import Column, Index, Text, text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import enum_column, utcnow
from radflow.enums import SeriesStatus, Severity

# The catalog dashboard's facets (radflow.explore.facets) group series by these expressions.
THICKNESS_EDGES = (0.0, 1.0, 2.0, 3.0, 5.0)  # mm; the last bin is open
AGE_STEP = 10  # years per band


def _bins(column: str, edges: tuple[float, ...]) -> str:
    """SQL for the lower edge of the bin a value falls in (NULL when it has none)."""
    whens = " ".join(f"WHEN {column} >= {edge!r} THEN {edge!r}" for edge in reversed(edges))
    return f"CASE {whens} END"


# The facets' bucket expressions, as SQL text: each has an index on exactly this expression
# (``ix_series_facet_*``), so a facet over the whole catalog reads its index in order instead
# of sorting the series table. They are expressions no cohort query uses in its WHERE clause,
# on purpose: an index on a plain column of low selectivity makes SQLite's planner slower for
# cohort queries (see above).
BUCKETS: dict[str, str] = {
    "manufacturer": "manufacturer",
    "model": "model",
    "field_strength": "field_strength + 0.0",
    "kvp": "kvp + 0.0",
    "slice_thickness": _bins("slice_thickness", THICKNESS_EDGES),
    "slice_spacing": _bins("slice_spacing", THICKNESS_EDGES),
    "study_year": "substr(study_date, 1, 4)",
    "age": f"CAST(age_years / {AGE_STEP} AS INTEGER) * {AGE_STEP}",
    "patient_sex": "upper(patient_sex)",
    "status": "status",
}
# Where PostgreSQL needs another expression for the same buckets: a date is no text there, and
# its CAST to INTEGER rounds where SQLite's truncates (an index needs immutable functions).
POSTGRES_BUCKETS: dict[str, str] = {
    "study_year": "CAST(CAST(EXTRACT(YEAR FROM study_date) AS INTEGER) AS TEXT)",
    "age": f"CAST(floor(age_years / {AGE_STEP}) AS INTEGER) * {AGE_STEP}",
}


def bucket_expression(key: str, dialect: str) -> str:
    """A facet's bucket expression as SQL text for a database dialect."""
    if dialect == "postgresql":
        return POSTGRES_BUCKETS.get(key, BUCKETS[key])
    return BUCKETS[key]


def index_expression(key: str, dialect: str) -> str:
    """The bucket expression as an index element (PostgreSQL wants an expression in
    parentheses)."""
    sql = bucket_expression(key, dialect)
    return sql if sql.isidentifier() or dialect != "postgresql" else f"({sql})"


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
        *(Index(f"ix_series_facet_{key}", sql if sql.isidentifier() else text(sql))
          for key, sql in BUCKETS.items()),
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

    __table_args__ = (Index("ix_finding_code_series", "code", "series_pk"),)

    id: int | None = Field(default=None, primary_key=True)
    series_pk: int = Field(foreign_key="series.id", index=True)
    instance_orthanc_id: str | None = None
    code: str = Field(index=True)
    severity: Severity = Field(sa_column=enum_column(Severity))
    message: str = Field(sa_column=Column(Text))


class CatalogGeneration(SQLModel, table=True):
    """One row that says which state of the series and finding tables a reader saw: ``value``
    counts changes (database triggers add one on every insert, update and delete of either
    table, in the writing transaction), and ``token`` is drawn when the database is made, so that
    a catalog made again does not reuse a count. The columnar copy of the catalog
    (:mod:`radflow.cohorts.columns`) is used only while both match what it was built from.
    Row 2 counts the changes that the current-result rule reads (results and their feature rows,
    migration 0011): the copy's ``has_result`` part is used only while it matches."""

    __tablename__ = "catalog_generation"

    id: int = Field(default=1, primary_key=True)
    token: str
    value: int = 0
