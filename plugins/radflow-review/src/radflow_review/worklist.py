"""The worklist's lists: *My reviews* (the open cases) and *Decided* (searchable by patient,
accession number and reviewer), and who each case is.

A case is named the way a reading room names it: the patient's name and ID, the accession
number, the study date and the modality. The patient ID, the study date and the modality come
from the catalog; the patient's name and the accession number from the study in the site's
Orthanc (the catalog does not keep them). The worklist runs inside the hospital, like Orthanc.

A review leaves the open list in the request that decides it (:mod:`radflow_review.decisions`):
from then on it is "decided — the run resumes" until its case run applies the decision.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from radflow.catalog.models.base import as_utc
from radflow.errors import RadflowError
from radflow.web.auth import User, clinician

router = APIRouter()
LIMIT = 50  # decided cases shown at most (newest first): a search narrows them
WILDCARDS = re.compile(r"[*?\\]")
STUDY_CACHE_SECONDS = 300
_studies: dict[str, tuple[float, dict[str, str | None]]] = {}
_studies_lock = threading.Lock()


def ctx(request: Request) -> Any:
    return request.app.state.ctx


def may_act(me: User, row: Any) -> bool:
    """Whether ``me`` may open and decide this review: assigned to them, to a role of theirs,
    or they are an admin."""
    if me.is_admin or row.assignee == me.sub:
        return True
    return row.assignee.startswith("role:") and me.has(row.assignee.removeprefix("role:"))


def result(request: Request, result_id: int | None) -> Any:
    """A derived result row (detached), or None."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult

    if result_id is None:
        return None
    with session_scope(ctx(request).catalog_url) as session:
        row = session.get(DerivedResult, result_id)
        if row is not None:
            session.expunge(row)
        return row


def person(pn: str | None) -> str | None:
    """A DICOM person name as people write it: ``Family^Given`` -> ``Family, Given``."""
    if not pn:
        return None
    parts = [p.strip() for p in str(pn).split("=")[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given or None


def _study_tags(request: Request, orthanc_id: str) -> dict[str, str | None]:
    """The patient's name and the accession number of a study in Orthanc (cached a few
    minutes; both None when Orthanc cannot be read: the list still shows)."""
    from radflow.web.render import shared

    now = time.monotonic()
    with _studies_lock:
        hit = _studies.get(orthanc_id)
    if hit is not None and now - hit[0] < STUDY_CACHE_SECONDS:
        return hit[1]
    try:
        body = shared(request).orthanc.resource("studies", orthanc_id)
    except RadflowError:
        return {"patient_name": None, "accession": None}
    tags = {"patient_name": person(body.get("PatientMainDicomTags", {}).get("PatientName")),
            "accession": body.get("MainDicomTags", {}).get("AccessionNumber") or None}
    with _studies_lock:
        if len(_studies) > 2000:
            _studies.clear()
        _studies[orthanc_id] = (now, tags)
    return tags


def series(request: Request, series_uid: str) -> dict[str, Any] | None:
    """The case's series and who it is: description, modality, slices, study date and UID,
    patient ID (catalog), patient name and accession number (Orthanc)."""
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Patient, Series, Study

    with session_scope(ctx(request).catalog_url) as session:
        row = session.exec(select(Series, Study, Patient).where(
            Series.series_uid == series_uid, Series.study_pk == Study.id,
            Study.patient_pk == Patient.id)).first()
        if row is None:
            return None
        found, study, patient = row
        info = {"description": found.series_description, "modality": found.modality,
                "instances": found.num_instances, "study_date": study.study_date,
                "study_uid": found.study_uid, "study_description": study.study_description,
                "patient_id": patient.patient_id}
        study_id = study.orthanc_id
    return info | _study_tags(request, study_id)


def state(row: Any) -> str:
    """Where a review stands, in words: open, or decided (expired) and whether its case run
    has applied the decision yet."""
    status = row.status.value if hasattr(row.status, "value") else str(row.status)
    if status == "open":
        return "open"
    return f"{status} — the run resumes" if row.applied_at is None \
        else f"{status} — the run applied it"


def review_row(request: Request, row: Any) -> dict[str, Any]:
    """A review as the pages show it (the case, the model, the decision and the SEG it took:
    the model's for accept, reject and expiry, the corrected one for corrected)."""
    now = datetime.now(UTC)
    model = result(request, row.result_id)
    due = as_utc(row.due_at)
    model_uid = model.series_uid if model else None
    return {"id": row.id, "status": row.status.value, "state": state(row),
            "assignee": row.assignee, "series_uid": row.source_series_uid,
            "series": series(request, row.source_series_uid),
            "model": f"{model.algorithm} {model.version}" if model else "?",
            "model_seg_uid": model_uid,
            "waiting_hours": round((now - as_utc(row.created_at)).total_seconds() / 3600, 1),
            "due_at": due.isoformat(timespec="minutes"), "overdue": due < now,
            "decision": row.decision, "reviewer": row.reviewer, "comment": row.comment,
            "flow_run_id": row.flow_run_id,
            "taken_seg_uid": row.corrected_seg_uid if row.decision == "corrected" else model_uid,
            "decided_at": as_utc(row.decided_at).isoformat(timespec="seconds")
            if row.decided_at else None, "applied": row.applied_at is not None}


def open_rows(request: Request, me: User) -> list[dict[str, Any]]:
    """The open reviews this user may act on, by due time."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus

    query = select(Review).where(Review.status == ReviewStatus.OPEN).order_by(col(Review.due_at))
    with session_scope(ctx(request).catalog_url) as session:
        rows = list(session.exec(query))
        for r in rows:
            session.expunge(r)
    return [review_row(request, r) for r in rows if may_act(me, r)]


def _term(value: str | None) -> str:
    """A search term without wildcards (the search adds its own), at most 64 characters."""
    return WILDCARDS.sub("", value or "").strip()[:64]


def _like(term: str) -> str:
    return "%" + term.replace("%", r"\%").replace("_", r"\_") + "%"


def _series_in_orthanc(request: Request, tag: str, term: str) -> set[str]:
    """The SeriesInstanceUIDs of the series whose study's ``tag`` (PatientName,
    AccessionNumber) contains ``term``: Orthanc's own index answers (PatientName ignoring
    case)."""
    from radflow.web.render import shared

    found: set[str] = set()
    for value in dict.fromkeys((term, term.upper())):
        found.update(ref.series_uid for ref in
                     shared(request).orthanc.find_series(**{tag: f"*{value}*"}))
    return found


def decided_rows(request: Request, me: User, *, patient: str = "", accession: str = "",
                 reviewer: str = "") -> tuple[list[dict[str, Any]], bool]:
    """The decided (and expired) reviews this user may act on, newest first, filtered on the
    server by patient (name or ID), accession number and reviewer (each: contains, ignoring
    case); at most :data:`LIMIT`. Returns (rows, whether there were more)."""
    from sqlalchemy import or_
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Patient, Review, Series, Study
    from radflow.enums import ReviewStatus

    query = select(Review).where(Review.status != ReviewStatus.OPEN)
    if reviewer:
        query = query.where(col(Review.reviewer).ilike(_like(reviewer), escape="\\"))
    if patient:
        by_id = select(Series.series_uid).where(Series.study_pk == Study.id,
                                                Study.patient_pk == Patient.id,
                                                col(Patient.patient_id).ilike(_like(patient),
                                                                              escape="\\"))
        query = query.where(or_(col(Review.source_series_uid).in_(by_id),
                                col(Review.source_series_uid).in_(
                                    _series_in_orthanc(request, "PatientName", patient))))
    if accession:
        query = query.where(col(Review.source_series_uid).in_(
            _series_in_orthanc(request, "AccessionNumber", accession)))
    query = query.order_by(col(Review.decided_at).desc(), col(Review.id).desc()).limit(4 * LIMIT)
    with session_scope(ctx(request).catalog_url) as session:
        rows = [r for r in session.exec(query) if may_act(me, r)]
        for r in rows:
            session.expunge(r)
    return [review_row(request, r) for r in rows[:LIMIT]], len(rows) > LIMIT


def _open_count(request: Request, me: User) -> int:
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus

    with session_scope(ctx(request).catalog_url) as session:
        return sum(may_act(me, r) for r in session.exec(
            select(Review).where(Review.status == ReviewStatus.OPEN)))


@router.get("/reviews")
def my_reviews(request: Request, tab: str = "open", patient: str = "", accession: str = "",
               reviewer: str = "", me: User = Depends(clinician)) -> Response:
    """*My reviews*: the open cases (``tab=open``) or the decided ones (``tab=decided``, a
    search form: ``patient``, ``accession``, ``reviewer``)."""
    from radflow.web.app import render

    flash = request.session.pop("flash", None)
    if tab != "decided":
        rows = open_rows(request, me)
        return render(request, "reviews.html", {"tab": "open", "rows": rows,
                                                "open_count": len(rows), "flash": flash})
    search = {"patient": _term(patient), "accession": _term(accession),
              "reviewer": _term(reviewer)}
    try:
        rows, more = decided_rows(request, me, **search)
        problem = None
    except RadflowError as exc:  # Orthanc away: the name and accession cannot be searched
        rows, more, problem = [], False, f"the search needs the site's Orthanc: {exc.message}"
    return render(request, "reviews.html", {
        "tab": "decided", "rows": rows, "more": more, "limit": LIMIT, "search": search,
        "searched": any(search.values()), "problem": problem,
        "open_count": _open_count(request, me), "flash": flash})


@router.get("/api/reviews")
def api_reviews(request: Request, me: User = Depends(clinician)) -> list[dict[str, Any]]:
    return open_rows(request, me)
