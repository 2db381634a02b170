"""Which series a pipeline runs on: a saved cohort, a cohort definition, or a list of
SeriesInstanceUIDs, pinned once per run.

A run pins its selection (the series and the hash of what selected them) under its run key the
first time it asks; every later ask (a retry, a resumed run, the site part of a federated study)
gets exactly the same series, even if the catalog changed meanwhile.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import CohortPin, Series
from radflow.cohorts import CohortDefinition, load_cohort, select_series
from radflow.errors import ConfigurationError, PolicyViolation
from radflow.hashing import canonical_json, digest
from radflow.orthanc.client import OrthancClient
from radflow.types import SeriesRef


def ref_of(row: Series) -> SeriesRef:
    """The SeriesRef of a catalog series."""
    return SeriesRef(orthanc_id=row.orthanc_id, series_uid=row.series_uid, study_uid=row.study_uid,
                     modality=row.modality, description=row.series_description,
                     instance_count=row.num_instances)


def _resolve(session: Session, orthanc: OrthancClient, cohort: str | None,
             definition: dict[str, Any] | None,
             series_uids: list[str] | None) -> tuple[str | None, dict[str, Any], list[SeriesRef]]:
    given = [x for x in (cohort, definition, series_uids) if x]
    if len(given) != 1:
        raise ConfigurationError("give exactly one of: a cohort name, a cohort definition, or a "
                                 "list of series UIDs",
                                 fix="e.g. cohort='contrast-ct' or series_uids=['1.2.3...']")
    if cohort or definition:
        parsed = load_cohort(session, cohort)[0] if cohort else CohortDefinition.parse(definition)
        return cohort, parsed.canonical(), [ref_of(r) for r in select_series(session, parsed)]
    rows: dict[str, list[Series]] = {}
    for row in session.exec(select(Series).where(col(Series.series_uid).in_(series_uids))):
        rows.setdefault(row.series_uid, []).append(row)
    refs = []
    for uid in series_uids:
        if uid in rows:
            refs += [ref_of(r) for r in sorted(rows[uid], key=lambda r: r.id)]
        else:  # not cataloged yet: ask Orthanc
            refs.append(orthanc.series_by_uid(uid))
    return None, {"series_uids": sorted(set(series_uids))}, refs


def pin_series(catalog_url: str, orthanc: OrthancClient, run_key: str, *,
               cohort: str | None = None, definition: dict[str, Any] | None = None,
               series_uids: list[str] | None = None,
               expect_hash: str | None = None) -> tuple[str, list[SeriesRef]]:
    """The series of a run, selected once and pinned under ``run_key``; returns (content hash,
    series).

    Args:
        run_key: the flow run id (or a federated job id).
        cohort: a saved cohort of the site; or
        definition: a cohort definition (JSON); or
        series_uids: explicit SeriesInstanceUIDs (from the catalog, else from Orthanc).
        expect_hash: the cohort hash the caller expects (a federated study names it): a
            different definition here is refused.

    Raises:
        ConfigurationError: not exactly one selection, or an unknown cohort.
        PolicyViolation: the cohort's hash is not ``expect_hash``.
        OrthancError: a UID that Orthanc does not hold either.
    """
    with session_scope(catalog_url) as session:
        pin = session.get(CohortPin, run_key)
        if pin is not None:
            return pin.content_hash, [SeriesRef(**s) for s in json.loads(pin.series)]
        name, canonical, refs = _resolve(session, orthanc, cohort, definition, series_uids)
        content_hash = digest(canonical)
        if expect_hash and expect_hash != content_hash:
            raise PolicyViolation(
                f"the cohort {name or 'definition'} here hashes to {content_hash}, not the "
                f"expected {expect_hash}", fix="use the exact cohort definition of the study")
        session.add(CohortPin(run_key=run_key, cohort=name, content_hash=content_hash,
                              definition=canonical_json(canonical),
                              series=json.dumps([_plain(r) for r in refs])))
    return content_hash, refs


def _plain(ref: SeriesRef) -> dict[str, Any]:
    return {"orthanc_id": ref.orthanc_id, "series_uid": ref.series_uid,
            "study_uid": ref.study_uid, "modality": ref.modality,
            "description": ref.description}


def series_refs(catalog_url: str, orthanc: OrthancClient, cohort: str | None = None,
                series_uids: list[str] | None = None) -> list[SeriesRef]:
    """The series of a saved cohort, or those with the given UIDs, now (not pinned)."""
    with session_scope(catalog_url) as session:
        return _resolve(session, orthanc, cohort, None, series_uids)[2]
