"""Write parsed series into the catalog (idempotently) and read summaries back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow.catalog import conflicts
from radflow.catalog.headers import ParsedSeries
from radflow.catalog.models import Finding, Instance, Patient, Series, Study, utcnow
from radflow.enums import SeriesStatus, Severity


def _get_or_new(session: Session, model: type, orthanc_id: str, **required: Any) -> Any:
    """The row of an Orthanc resource, created if missing. Ingest runs catalog series in
    parallel, and two series of one study may both find its row missing: the second insert
    fails, in a savepoint, and the row the first one made is read instead."""
    row = session.exec(select(model).where(model.orthanc_id == orthanc_id)).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = model(orthanc_id=orthanc_id, **required)
            session.add(row)
    except IntegrityError:
        row = session.exec(select(model).where(model.orthanc_id == orthanc_id)).one()
    return row


def upsert_series(session: Session, parsed: ParsedSeries, *, patient_orthanc_id: str,
                  study_orthanc_id: str) -> Series:
    """Insert or replace one series, its instances and findings (and its study and patient).

    Re-ingesting the same series replaces its rows: no duplicates, however often it runs.
    UIDs it shares with other resources Orthanc holds become findings on every series involved.
    """
    patient = _get_or_new(session, Patient, patient_orthanc_id)
    for key, value in parsed.patient.items():
        setattr(patient, key, value)
    session.add(patient)
    session.flush()

    study = _get_or_new(session, Study, study_orthanc_id, study_uid=parsed.study["study_uid"],
                        patient_pk=patient.id)
    for key, value in parsed.study.items():
        setattr(study, key, value)
    study.patient_pk = patient.id
    session.add(study)
    session.flush()

    series = _get_or_new(session, Series, parsed.series["orthanc_id"],
                         series_uid=parsed.series["series_uid"], study_pk=study.id,
                         study_uid=parsed.series["study_uid"])
    for key, value in parsed.series.items():
        setattr(series, key, value)
    series.study_pk = study.id
    series.status = parsed.status
    series.ingested_at = utcnow()
    session.add(series)
    session.flush()

    session.execute(delete(Instance).where(col(Instance.series_pk) == series.id))
    session.execute(delete(Finding).where(col(Finding.series_pk) == series.id))
    if parsed.instances:
        session.execute(insert(Instance), [
            {**vars(i), "series_pk": series.id} for i in parsed.instances])
    if parsed.findings:
        session.execute(insert(Finding), [
            {**vars(f), "series_pk": series.id} for f in parsed.findings])
    session.flush()
    conflicts.refresh(session, conflicts.involved(session, series))
    return series


def record_failed_series(session: Session, series: dict[str, Any], study: dict[str, Any],
                         reason: str) -> Series:
    """Catalog a series that could not be cataloged, from Orthanc's own index (its main tags):
    status ``error`` and a ``catalog_failed`` finding with the reason. Nothing Orthanc holds is
    ever missing from the catalog, even when reading it failed."""
    tags = series.get("MainDicomTags", {})
    patient_tags = study.get("PatientMainDicomTags", {})
    study_tags = study.get("MainDicomTags", {})
    patient = _get_or_new(session, Patient, study["ParentPatient"])
    patient.patient_id = patient.patient_id or (patient_tags.get("PatientID") or None)
    session.add(patient)
    session.flush()
    study_row = _get_or_new(session, Study, series["ParentStudy"],
                            study_uid=study_tags.get("StudyInstanceUID", ""),
                            patient_pk=patient.id)
    study_row.study_uid = study_row.study_uid or study_tags.get("StudyInstanceUID", "")
    study_row.patient_pk = patient.id
    session.add(study_row)
    session.flush()
    row = _get_or_new(session, Series, series["ID"], series_uid=tags.get("SeriesInstanceUID", ""),
                      study_pk=study_row.id, study_uid=study_row.study_uid)
    row.series_uid = row.series_uid or tags.get("SeriesInstanceUID", "")
    row.study_uid = study_row.study_uid
    row.study_pk = study_row.id
    row.modality = row.modality or (tags.get("Modality") or None)
    row.series_description = row.series_description or tags.get("SeriesDescription")
    row.num_instances = len(series.get("Instances", []))
    row.status = SeriesStatus.ERROR
    row.ingested_at = utcnow()
    session.add(row)
    session.flush()
    session.execute(delete(Finding).where(Finding.series_pk == row.id,
                                          Finding.code == "catalog_failed"))
    session.add(Finding(series_pk=row.id, code="catalog_failed", severity=Severity.ERROR,
                        message=f"the series could not be cataloged: {reason}"[:2000]))
    return row


def delete_series(session: Session, orthanc_id: str) -> bool:
    """Remove a series (by Orthanc id) with its instances and findings, then its study and
    patient if nothing else refers to them. Returns whether the series was cataloged."""
    from radflow.results.store import delete_for_series

    series = session.exec(select(Series).where(Series.orthanc_id == orthanc_id)).first()
    if series is None:
        return False
    study_pk = series.study_pk
    sharing = conflicts.involved(session, series) - {series.id}
    instances = session.exec(select(Instance.orthanc_id).where(Instance.series_pk == series.id))
    delete_for_series(session, orthanc_id, list(instances))
    session.execute(delete(Instance).where(col(Instance.series_pk) == series.id))
    session.execute(delete(Finding).where(col(Finding.series_pk) == series.id))
    session.delete(series)
    session.flush()
    if session.exec(select(Series.id).where(Series.study_pk == study_pk)).first() is None:
        study = session.get(Study, study_pk)
        patient_pk = study.patient_pk
        session.delete(study)
        session.flush()
        if session.exec(select(Study.id).where(Study.patient_pk == patient_pk)).first() is None:
            session.delete(session.get(Patient, patient_pk))
    session.flush()
    conflicts.refresh(session, sharing)  # the conflict may be gone with this series
    return True


def catalog_stats(session: Session) -> dict[str, Any]:
    """Counts for `radflow catalog stats` and the ingest artifact."""

    def count(model: type) -> int:
        return session.exec(select(func.count()).select_from(model)).one()

    def by(column: Any) -> dict[str, int]:
        rows = session.exec(select(column, func.count()).group_by(column)).all()
        return dict(sorted(((k or "(none)"), n) for k, n in rows))

    findings = session.exec(  # warnings and errors; informational findings (a SEG is not an
        select(Finding.code, func.count(func.distinct(Finding.series_pk)))  # image) stay listed
        .where(Finding.severity != Severity.INFO).group_by(Finding.code)  # by `catalog findings`
    ).all()
    return {
        "patients": count(Patient),
        "studies": count(Study),
        "series": count(Series),
        "instances": count(Instance),
        "by_modality": by(Series.modality),
        "by_body_part": by(Series.body_part),
        "by_manufacturer": by(Series.manufacturer),
        "series_status": by(Series.status),
        "series_with_finding": dict(sorted(findings)),
    }
