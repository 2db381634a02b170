"""UID conflicts: one DICOM UID that Orthanc holds as several resources.

Orthanc identifies a study by a hash of the PatientID and the StudyInstanceUID (a series, an
instance: of the UIDs above them too), so it keeps apart what DICOM says is one thing: a study
UID under two patients, a series UID under two studies, a SOP Instance UID in two series (with
different content, since Orthanc would otherwise see the same instance). The catalog holds what
Orthanc holds, and every series involved gets a finding that names the others.
"""

from __future__ import annotations

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from radflow.catalog.models import Finding, Instance, Patient, Series, Study
from radflow.enums import SeriesStatus, Severity

STUDY, SERIES, INSTANCE = "study_uid_conflict", "series_uid_conflict", "sop_uid_conflict"
CODES = (STUDY, SERIES, INSTANCE)


def involved(session: Session, series: Series) -> set[int]:
    """The series that share a study, series or SOP Instance UID with ``series`` (itself too)."""
    ids = {series.id}
    if series.study_uid:
        ids |= set(session.exec(select(Series.id).join(Study, Study.id == Series.study_pk)
                                .where(Study.study_uid == series.study_uid)).all())
    if series.series_uid:
        ids |= set(session.exec(select(Series.id).where(
            Series.series_uid == series.series_uid)).all())
    uids = select(Instance.sop_instance_uid).where(Instance.series_pk == series.id,
                                                   Instance.sop_instance_uid != "")
    ids |= set(session.exec(select(Instance.series_pk).where(
        col(Instance.sop_instance_uid).in_(uids)).distinct()).all())
    return ids


def refresh(session: Session, series_ids: set[int]) -> None:
    """Recompute the conflict findings (and the status) of these series."""
    for sid in series_ids:
        series = session.get(Series, sid)
        if series is None:
            continue
        session.execute(delete(Finding).where(Finding.series_pk == sid,
                                              col(Finding.code).in_(CODES)))
        for code, message in _conflicts(session, series):
            session.add(Finding(series_pk=sid, code=code, severity=Severity.ERROR,
                                message=message))
        session.flush()
        severities = session.exec(select(Finding.severity).where(Finding.series_pk == sid)).all()
        series.status = SeriesStatus.worst(severities)
        session.add(series)


def _conflicts(session: Session, series: Series) -> list[tuple[str, str]]:
    found = []
    study = session.get(Study, series.study_pk)
    if study is not None and study.study_uid:
        others = session.exec(select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
                              .where(Study.study_uid == study.study_uid,
                                     Study.id != study.id)).all()
        if others:
            patients = sorted({p.patient_id or "(no PatientID)" for _, p in others})
            found.append((STUDY, f"StudyInstanceUID {study.study_uid} is also held by "
                                 f"{len(others)} other study(ies) in Orthanc, under PatientID "
                                 f"{', '.join(patients)[:200]}: one study UID under two patients "
                                 "(a corrected PatientID, or a UID reused). Orthanc keeps them "
                                 "apart; resolve it at the source and delete the wrong copy"))
    if series.series_uid:
        others = session.exec(select(Series.orthanc_id).where(
            Series.series_uid == series.series_uid, Series.id != series.id)).all()
        if others:
            found.append((SERIES, f"SeriesInstanceUID {series.series_uid} is also held by "
                                  f"{len(others)} other series in Orthanc ({', '.join(others)[:200]}): "
                                  "one series UID under two studies or patients"))
    mine = select(Instance.sop_instance_uid).where(Instance.series_pk == series.id,
                                                   Instance.sop_instance_uid != "")
    shared = session.exec(select(func.count(func.distinct(Instance.sop_instance_uid))).where(
        col(Instance.sop_instance_uid).in_(mine), Instance.series_pk != series.id)).one()
    if shared:
        found.append((INSTANCE, f"{shared} SOP Instance UID(s) of this series are also held by "
                                "instances of other series: one SOP Instance UID with different "
                                "patient, study or series (so different content)"))
    return found
