"""Derived results and their feature values.

A derived result is an object radflow made from site data: a DICOM SEG, an SR, a feature table.
Its ``key`` is the hash of everything that determines it (the input UIDs, the algorithm, its
version and the hash of its parameters): the same key is never computed twice, and the DICOM
UIDs of the object derive from it. ``status`` is where it stands (draft, accepted, rejected,
corrected, superseded), ``parent_id`` links a clinician's corrected version to the result it
corrects, and ``derived_from_id`` links a result to the result it was computed from (an SR to
its SEG): deleting a series deletes the results made from it, and theirs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import enum_column, utcnow
from radflow.enums import ResultKind, ResultStatus


class DerivedResult(SQLModel, table=True):
    __tablename__ = "result"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)  # sha256 of kind, inputs, algorithm, version, params
    kind: ResultKind = Field(sa_column=enum_column(ResultKind, index=True))
    source_series_uid: str = Field(index=True)  # the image series it was made from
    source_orthanc_id: str | None = Field(default=None, index=True)  # that series in Orthanc
    inputs: str = Field(default="[]", sa_column=Column(Text))  # JSON list of the input UIDs
    algorithm: str
    version: str
    params_hash: str = ""
    status: ResultStatus = Field(default=ResultStatus.DRAFT,
                                 sa_column=enum_column(ResultStatus, default="draft", index=True))
    status_by: str | None = None  # who set the status (a reviewer, or radflow)
    status_reason: str | None = Field(default=None, sa_column=Column(Text))
    parent_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("result.id", ondelete="SET NULL"), index=True))
    derived_from_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("result.id", ondelete="CASCADE"), index=True))
    orthanc_id: str | None = None  # the instance in Orthanc (None for a table-only result)
    sop_instance_uid: str | None = None
    series_uid: str | None = None
    detail: str = Field(default="{}", sa_column=Column(Text))  # JSON: segments, timings...
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class FeatureValue(SQLModel, table=True):
    """One feature of one segment of one result (the catalog's feature table)."""

    __tablename__ = "feature"

    id: int | None = Field(default=None, primary_key=True)
    result_pk: int = Field(sa_column=Column(Integer, ForeignKey("result.id", ondelete="CASCADE"),
                                            index=True, nullable=False))
    source_series_uid: str = Field(index=True)
    segment_number: int
    segment_label: str
    feature: str = Field(index=True)  # pyradiomics name, e.g. original_shape_VoxelVolume
    code: str | None = None  # the standard code, e.g. IBSI:RNU0
    value: float
    unit: str
