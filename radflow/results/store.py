"""Derived results in the catalog: find by key, record, attach features, change status, delete
with their source.

Status changes follow one table (:data:`TRANSITIONS`); a clinician's correction is a new result
whose ``parent_id`` is the result it corrects, and that parent becomes ``corrected``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow.catalog.models import DerivedResult, FeatureValue, utcnow
from radflow.enums import ResultKind, ResultStatus
from radflow.errors import ConfigurationError, PolicyViolation
from radflow.results.current import current_features_join, current_units
from radflow.results.keys import LEGACY_PARAMS, ResultKey
from radflow.types import REF_TYPES, DerivedRef, FeatureTable, ReportRef, SegmentationRef, SeriesRef

TRANSITIONS: dict[ResultStatus, set[ResultStatus]] = {
    ResultStatus.DRAFT: {ResultStatus.ACCEPTED, ResultStatus.REJECTED, ResultStatus.CORRECTED,
                         ResultStatus.SUPERSEDED},
    ResultStatus.ACCEPTED: {ResultStatus.REJECTED, ResultStatus.CORRECTED,
                            ResultStatus.SUPERSEDED},
    ResultStatus.REJECTED: {ResultStatus.ACCEPTED, ResultStatus.CORRECTED,
                            ResultStatus.SUPERSEDED},
    ResultStatus.CORRECTED: {ResultStatus.SUPERSEDED},
    ResultStatus.SUPERSEDED: set(),
}


def find(session: Session, key: str | ResultKey) -> DerivedResult | None:
    """The result recorded under a key (its digest or the key itself)."""
    digest = key.digest if isinstance(key, ResultKey) else key
    return session.exec(select(DerivedResult).where(DerivedResult.key == digest)).first()


def get(session: Session, result_id: int) -> DerivedResult:
    """A result by id.

    Raises:
        ConfigurationError: no such result (it may have been deleted with its series).
    """
    row = session.get(DerivedResult, result_id)
    if row is None:
        raise ConfigurationError(f"there is no derived result {result_id} in the catalog",
                                 fix="list results with `radflow results list`; it may have been "
                                     "deleted with its source series")
    return row


def latest(session: Session, key: ResultKey) -> tuple[ResultKey, DerivedResult] | None:
    """The newest generation recorded of a key (a key recomputed by force has several), with
    its row; None when none was recorded."""
    found = None
    while (row := find(session, key)) is not None:
        found = (key, row)
        key = key.next_generation()
    return found


def record(session: Session, key: ResultKey, source: SeriesRef, *, orthanc_id: str | None,
           sop_instance_uid: str | None, series_uid: str | None,
           detail: dict[str, Any] | None = None, derived_from_id: int | None = None,
           parent_id: int | None = None, status: ResultStatus = ResultStatus.DRAFT,
           status_by: str | None = None, recomputes: int | None = None) -> DerivedResult:
    """Record the result of ``key``, or update its row (idempotent), and mark ``superseded``
    the results that another version of the same algorithm (or the pre-key catalog) made from
    the same inputs (the whole input key).

    Concurrent calls with one key make one row: the insert runs in a savepoint, and a call that
    loses the race reads and updates the winner's row. Recording again keeps the row's status
    (unless it was superseded) and its lineage (``parent_id``, ``derived_from_id``) unless new
    ones are given.

    Args:
        recomputes: the result this one recomputes by force (a new generation of its key): that
            one and what was made from it become ``superseded``, naming this one; this one
            starts ``draft``, saying so, with that one as its parent.
    """
    row = find(session, key)
    if row is None:
        try:
            with session.begin_nested():
                row = DerivedResult(
                    key=key.digest, kind=key.kind, source_series_uid=source.series_uid,
                    algorithm=key.algorithm, version=key.version, params_hash=key.params_hash,
                    status=status, status_by=status_by, parent_id=parent_id,
                    derived_from_id=derived_from_id)
                _fill(row, key, source, orthanc_id, sop_instance_uid, series_uid, detail)
                session.add(row)
        except IntegrityError:  # another producer recorded this key meanwhile: its row
            row = session.exec(select(DerivedResult).where(DerivedResult.key == key.digest)
                               .execution_options(populate_existing=True)).first()
            if row is None:  # not the key's conflict (a missing parent, say): the error
                raise
        else:
            if recomputes is not None:
                _recomputed(session, row, recomputes)
            _supersede_older(session, key, source, row)
            return row
    _fill(row, key, source, orthanc_id, sop_instance_uid, series_uid, detail)
    if derived_from_id is not None:
        row.derived_from_id = derived_from_id
    if parent_id is not None:
        row.parent_id = parent_id
    if row.status == ResultStatus.SUPERSEDED:
        row.status, row.status_by, row.status_reason = status, status_by, None
    session.add(row)
    session.flush()
    _supersede_older(session, key, source, row)
    return row


def _fill(row: DerivedResult, key: ResultKey, source: SeriesRef, orthanc_id: str | None,
          sop_instance_uid: str | None, series_uid: str | None,
          detail: dict[str, Any] | None) -> None:
    row.source_orthanc_id = source.orthanc_id or row.source_orthanc_id
    row.inputs = json.dumps(list(key.inputs))
    row.orthanc_id, row.sop_instance_uid, row.series_uid = orthanc_id, sop_instance_uid, series_uid
    row.detail = json.dumps(detail or {}, default=str)
    row.updated_at = utcnow()


def _recomputed(session: Session, row: DerivedResult, previous_id: int) -> None:
    previous = get(session, previous_id)
    row.parent_id = previous.id
    _set(row, ResultStatus.DRAFT, "radflow", f"recomputed by force from result {previous.id} "
         f"(which was {previous.status.value})")
    session.add(row)
    supersede(session, previous, f"recomputed by force as result {row.id}")


def _supersede_older(session: Session, key: ResultKey, source: SeriesRef,
                     row: DerivedResult) -> None:
    older = session.exec(select(DerivedResult).where(
        DerivedResult.kind == key.kind, DerivedResult.source_series_uid == source.series_uid,
        DerivedResult.algorithm == key.algorithm, DerivedResult.id != row.id,
        col(DerivedResult.status).not_in([ResultStatus.SUPERSEDED]),
        or_(DerivedResult.version != key.version, DerivedResult.params_hash == LEGACY_PARAMS),
    )).all()
    for other in older:
        if json.loads(other.inputs) == list(key.inputs):
            supersede(session, other, f"made again as result {row.id} "
                                      f"({key.algorithm} {key.version})")


def supersede(session: Session, row: DerivedResult, reason: str) -> int:
    """Mark a result ``superseded`` (saying why), and the results made from it (the SR of a
    SEG: it quantifies an object that is no longer current). Returns how many changed."""
    changed, frontier = 0, [row]
    while frontier:
        item = frontier.pop()
        if item.status == ResultStatus.SUPERSEDED:
            continue
        _set(item, ResultStatus.SUPERSEDED, "radflow",
             reason if item is row else f"made from result {row.id}, which was {reason}")
        session.add(item)
        changed += 1
        frontier.extend(session.exec(select(DerivedResult).where(
            DerivedResult.derived_from_id == item.id)).all())
    session.flush()
    return changed


def replace_features(session: Session, result: DerivedResult, table: FeatureTable) -> int:
    """The feature rows of a result, replaced as a whole (a re-run never duplicates them)."""
    session.execute(delete(FeatureValue).where(col(FeatureValue.result_pk) == result.id))
    for row in table.rows:
        session.add(FeatureValue(result_pk=result.id, source_series_uid=row["source_series_uid"],
                                 segment_number=row["segment_number"],
                                 segment_label=row["segment_label"], feature=row["feature"],
                                 code=row.get("code"), value=float(row["value"]), unit=row["unit"]))
    return len(table.rows)


def features_of(session: Session, result_id: int) -> FeatureTable:
    """The feature values of one result (never those of another result of the series)."""
    return feature_table(session, result_ids=[result_id], current_only=False)


def feature_table(session: Session, *, series_uids: list[str] | None = None,
                  result_ids: list[int] | None = None, features: list[str] | None = None,
                  current_only: bool = True) -> FeatureTable:
    """Feature values with the result they belong to (its algorithm, version, parameters' hash
    and status). By default only those of the current result of each series, kind, line and
    segment (:mod:`radflow.results.current`): one value per series, segment and feature."""
    query = select(FeatureValue, DerivedResult).join(
        DerivedResult, col(DerivedResult.id) == col(FeatureValue.result_pk))
    if current_only:
        units = current_units(series_uids)
        query = query.join(units, current_features_join(units))
    if series_uids is not None:
        query = query.where(col(FeatureValue.source_series_uid).in_(series_uids))
    if result_ids is not None:
        query = query.where(col(FeatureValue.result_pk).in_(result_ids))
    if features:
        query = query.where(col(FeatureValue.feature).in_(features))
    rows = [{"source_series_uid": f.source_series_uid, "segment_number": f.segment_number,
             "segment_label": f.segment_label, "feature": f.feature, "code": f.code,
             "value": f.value, "unit": f.unit, "result_id": r.id, "algorithm": r.algorithm,
             "version": r.version, "params_hash": r.params_hash, "status": r.status.value}
            for f, r in session.exec(query.order_by(col(FeatureValue.id)))]
    return FeatureTable(rows)


def _set(row: DerivedResult, status: ResultStatus, by: str | None, reason: str | None) -> None:
    row.status, row.status_by, row.status_reason = status, by, reason
    row.updated_at = utcnow()


def set_status(session: Session, result_id: int, status: ResultStatus | str, *, by: str,
               reason: str | None = None, correction_id: int | None = None) -> DerivedResult:
    """Change a result's status (a review decision, for example).

    ``corrected`` needs ``correction_id``: the result holding the corrected version, which gets
    this one as its parent.

    Raises:
        PolicyViolation: the change is not allowed from the current status (see TRANSITIONS).
        ConfigurationError: no such result, or ``corrected`` without a correction.
    """
    status = ResultStatus(status)
    row = get(session, result_id)
    if status == row.status:
        return row
    if status not in TRANSITIONS[row.status]:
        raise PolicyViolation(
            f"result {result_id} is {row.status.value}; it cannot become {status.value}",
            fix=f"allowed from {row.status.value}: "
                f"{', '.join(sorted(s.value for s in TRANSITIONS[row.status])) or 'nothing'}")
    if status == ResultStatus.CORRECTED:
        if correction_id is None:
            raise ConfigurationError(f"marking result {result_id} corrected needs the corrected "
                                     "version", fix="record the corrected object first and pass "
                                                    "its result id as correction_id")
        correction = get(session, correction_id)
        correction.parent_id = row.id
        session.add(correction)
    _set(row, status, by, reason)
    session.add(row)
    session.flush()
    return row


def lineage(session: Session, result_id: int) -> list[DerivedResult]:
    """The result and its ancestors by revision (``parent_id``), newest first."""
    chain, seen = [], set()
    row = session.get(DerivedResult, result_id)
    while row is not None and row.id not in seen:
        chain.append(row)
        seen.add(row.id)
        row = session.get(DerivedResult, row.parent_id) if row.parent_id else None
    return chain


def delete_for_series(session: Session, series_orthanc_id: str,
                      instance_orthanc_ids: Iterable[str] = ()) -> int:
    """Delete the results made from a series (and those made from them, and their features),
    and the results whose object was an instance of it. Returns how many results went."""
    instances = list(instance_orthanc_ids)
    clauses = [DerivedResult.source_orthanc_id == series_orthanc_id]
    if instances:
        clauses.append(col(DerivedResult.orthanc_id).in_(instances))
    doomed = set(session.exec(select(DerivedResult.id).where(or_(*clauses))).all())
    frontier = set(doomed)
    while frontier:
        children = set(session.exec(select(DerivedResult.id).where(
            col(DerivedResult.derived_from_id).in_(frontier))).all()) - doomed
        doomed |= children
        frontier = children
    if not doomed:
        return 0
    session.execute(delete(FeatureValue).where(col(FeatureValue.result_pk).in_(doomed)))
    for row in session.exec(select(DerivedResult).where(col(DerivedResult.parent_id).in_(doomed))):
        row.parent_id = None
        session.add(row)
    session.execute(delete(DerivedResult).where(col(DerivedResult.id).in_(doomed)))
    return len(doomed)


def to_ref(row: DerivedResult, source: SeriesRef | None = None, *, cached: bool = False,
           features: FeatureTable | None = None) -> DerivedRef:
    """The typed reference (SegmentationRef, ReportRef, DerivedRef) of a result row."""
    detail = json.loads(row.detail or "{}")
    source = source or SeriesRef(row.source_orthanc_id or "", row.source_series_uid)
    common = dict(result_id=row.id, key=row.key, kind=ResultKind(row.kind).value, source=source,
                  algorithm=row.algorithm, algorithm_version=row.version,
                  params_hash=row.params_hash, status=ResultStatus(row.status).value,
                  orthanc_id=row.orthanc_id, sop_instance_uid=row.sop_instance_uid,
                  series_uid=row.series_uid, cached=cached)
    kind = REF_TYPES.get(common["kind"], DerivedRef)
    if kind is SegmentationRef:
        segments = {int(k): v for k, v in detail.get("segments", {}).items()}
        return SegmentationRef(**common, segments=segments)
    if kind is ReportRef:
        return ReportRef(**common, features=features or FeatureTable())
    return DerivedRef(**common)
