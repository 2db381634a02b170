"""Results (SEG, SR) and feature values in the catalog."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from radflow.catalog.models import DerivedResult, FeatureValue, utcnow
from radflow.types import FeatureTable


def find_result(session: Session, kind: str, source_series_uid: str, algorithm: str,
                version: str) -> DerivedResult | None:
    """The recorded result for this cache key, if any."""
    return session.exec(select(DerivedResult).where(
        DerivedResult.kind == kind, DerivedResult.source_series_uid == source_series_uid,
        DerivedResult.algorithm == algorithm, DerivedResult.version == version)).first()


def record_result(session: Session, *, kind: str, source_series_uid: str, algorithm: str,
                  version: str, orthanc_id: str, sop_instance_uid: str, series_uid: str,
                  detail: dict[str, Any] | None = None) -> DerivedResult:
    """Insert or update the result for its cache key (idempotent)."""
    row = find_result(session, kind, source_series_uid, algorithm, version) or DerivedResult(
        kind=kind, source_series_uid=source_series_uid, algorithm=algorithm, version=version,
        orthanc_id=orthanc_id, sop_instance_uid=sop_instance_uid, series_uid=series_uid)
    row.orthanc_id, row.sop_instance_uid, row.series_uid = orthanc_id, sop_instance_uid, series_uid
    row.detail = json.dumps(detail or {}, default=str)
    row.created_at = utcnow()
    session.add(row)
    session.flush()
    return row


def replace_features(session: Session, result: DerivedResult, table: FeatureTable) -> int:
    """The feature rows of a result, replaced as a whole (a re-run never duplicates them)."""
    session.execute(delete(FeatureValue).where(col(FeatureValue.result_pk) == result.id))
    for row in table.rows:
        session.add(FeatureValue(result_pk=result.id, source_series_uid=row["source_series_uid"],
                                 segment_number=row["segment_number"],
                                 segment_label=row["segment_label"], feature=row["feature"],
                                 value=float(row["value"]), unit=row["unit"]))
    return len(table.rows)


def feature_table(session: Session, source_series_uids: list[str] | None = None,
                  features: list[str] | None = None) -> FeatureTable:
    """Feature values from the catalog (all, or for some series / feature names)."""
    query = select(FeatureValue)
    if source_series_uids:
        query = query.where(col(FeatureValue.source_series_uid).in_(source_series_uids))
    if features:
        query = query.where(col(FeatureValue.feature).in_(features))
    rows = [{"source_series_uid": f.source_series_uid, "segment_number": f.segment_number,
             "segment_label": f.segment_label, "feature": f.feature, "value": f.value,
             "unit": f.unit} for f in session.exec(query.order_by(col(FeatureValue.id)))]
    return FeatureTable(rows)
