"""Which series a pipeline runs on: a saved cohort, or a list of SeriesInstanceUIDs."""

from __future__ import annotations

from radflow.orthanc.client import OrthancClient
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import Series
from radflow.cohorts import load_cohort, select_series
from radflow.errors import ConfigurationError
from radflow.types import SeriesRef


def _ref(row: Series) -> SeriesRef:
    return SeriesRef(orthanc_id=row.orthanc_id, series_uid=row.series_uid, study_uid=row.study_uid,
                     modality=row.modality, description=row.series_description)


def series_refs(catalog_url: str, orthanc: OrthancClient, cohort: str | None = None,
                series_uids: list[str] | None = None) -> list[SeriesRef]:
    """The series of a saved cohort, or those with the given UIDs (from the catalog, else
    from Orthanc for series not cataloged yet).

    Raises:
        ConfigurationError: neither or both given, or an unknown cohort.
        OrthancError: a UID that Orthanc does not hold either.
    """
    if bool(cohort) == bool(series_uids):
        raise ConfigurationError("give either a cohort or a list of series UIDs",
                                 fix="e.g. cohort='contrast-ct' or series_uids=['1.2.3...']")
    with session_scope(catalog_url) as session:
        if cohort:
            definition, _ = load_cohort(session, cohort)
            return [_ref(row) for row in select_series(session, definition)]
        rows = {r.series_uid: r for r in session.exec(
            select(Series).where(Series.series_uid.in_(series_uids)))}
    refs = []
    for uid in series_uids:
        if uid in rows:
            refs.append(_ref(rows[uid]))
        else:
            info = orthanc.series_by_uid(uid)
            refs.append(SeriesRef(info.orthanc_id, info.series_uid, info.study_uid, info.modality,
                                  info.description))
    return refs
