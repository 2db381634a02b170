"""The clinicians' worklist: *My reviews*, the case page (the image area and editor, whose
routes are in :mod:`radflow_review.views`; the decision form; the history), and their API.

Every route needs a log-in with a clinical role; acting on a review also needs the review to be
assigned to the user or to one of their roles (admins may act on any). A decision resumes the
suspended case run through the site's Prefect API with the reviewer's subject from the log-in.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from radflow.catalog.models.base import as_utc
from radflow.errors import DicomInputError, RadflowError
from radflow.web.auth import CLINICAL_ROLES, User, check_csrf, clinician
from radflow.web.security import RowId

router = APIRouter()
TEMPLATES = Path(__file__).parent / "templates"
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
RECENT = timedelta(days=1)  # how long My reviews lists a decided review



def may_act(me: User, row: Any) -> bool:
    """Whether ``me`` may open and decide this review: assigned to them, to a role of theirs,
    or they are an admin."""
    if me.is_admin or row.assignee == me.sub:
        return True
    return row.assignee.startswith("role:") and me.has(row.assignee.removeprefix("role:"))


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def _renderer(request: Request) -> Any:
    from radflow.web.render import shared

    return shared(request)


def _stack(request: Request, series_uid: str) -> Any:
    """The case's series as slices; 404 when it is gone from Orthanc, 502 when Orthanc cannot
    be read."""
    try:
        return _renderer(request).stack(series_uid)
    except RadflowError as exc:
        gone = getattr(exc, "status", None) == 404
        raise HTTPException(404 if gone else 502, f"the case's series cannot be shown: "
                                                  f"{exc.message}") from exc


def _labels(request: Request, seg_uid: str, series_uid: str) -> Any:
    _stack(request, series_uid)
    try:
        return _renderer(request).labels(seg_uid, series_uid)
    except RadflowError as exc:
        raise HTTPException(404 if getattr(exc, "status", None) == 404 else 502,
                            f"the SEG cannot be shown: {exc.message}") from exc


def _review(request: Request, review_id: int, me: User) -> Any:
    """The review, if this user may act on it (404: no such review at this site; 403: not
    theirs)."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review

    with session_scope(_ctx(request).catalog_url) as session:
        row = session.get(Review, review_id)
        if row is not None:
            session.expunge(row)
    if row is None:
        raise HTTPException(404, f"there is no review {review_id} at site {_ctx(request).name}")
    if not may_act(me, row):
        raise HTTPException(403, f"review {review_id} is assigned to {row.assignee}, not to you")
    return row


def _result(request: Request, result_id: int | None) -> Any:
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult

    if result_id is None:
        return None
    with session_scope(_ctx(request).catalog_url) as session:
        row = session.get(DerivedResult, result_id)
        if row is not None:
            session.expunge(row)
        return row


def _series(request: Request, series_uid: str) -> Any:
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Series, Study

    with session_scope(_ctx(request).catalog_url) as session:
        row = session.exec(select(Series, Study).where(Series.series_uid == series_uid,
                                                       Series.study_pk == Study.id)).first()
        if row is None:
            return None
        series, study = row
        return {"description": series.series_description, "modality": series.modality,
                "instances": series.num_instances, "study_date": study.study_date,
                "study_uid": series.study_uid}


def _row(request: Request, row: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    result = _result(request, row.result_id)
    due = as_utc(row.due_at)
    return {"id": row.id, "status": row.status.value, "assignee": row.assignee,
            "series_uid": row.source_series_uid, "series": _series(request, row.source_series_uid),
            "model": f"{result.algorithm} {result.version}" if result else "?",
            "waiting_hours": round((now - as_utc(row.created_at)).total_seconds() / 3600, 1),
            "due_at": due.isoformat(timespec="minutes"), "overdue": due < now,
            "decision": row.decision, "reviewer": row.reviewer, "flow_run_id": row.flow_run_id,
            "decided_at": as_utc(row.decided_at).isoformat(timespec="seconds")
            if row.decided_at else None, "applied": row.applied_at is not None}


def _rows(request: Request, me: User, *, decided: bool = False) -> list[dict[str, Any]]:
    """The open reviews this user may act on (by due time); ``decided``: those decided in the
    last :data:`RECENT`, newest first, shown as decided from the moment they are."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus

    if decided:
        query = select(Review).where(Review.status != ReviewStatus.OPEN,
                                     col(Review.decided_at) > datetime.now(UTC) - RECENT) \
            .order_by(col(Review.decided_at).desc())
    else:
        query = select(Review).where(Review.status == ReviewStatus.OPEN) \
            .order_by(col(Review.due_at))
    with session_scope(_ctx(request).catalog_url) as session:
        rows = list(session.exec(query))
        for r in rows:
            session.expunge(r)
    return [_row(request, r) for r in rows if may_act(me, r)]


def _open_rows(request: Request, me: User) -> list[dict[str, Any]]:
    return _rows(request, me)


@router.get("/reviews")
def my_reviews(request: Request, me: User = Depends(clinician)) -> Response:
    from radflow.web.app import render

    return render(request, "reviews.html", {"rows": _open_rows(request, me),
                                            "decided": _rows(request, me, decided=True),
                                            "flash": request.session.pop("flash", None)})


@router.get("/api/reviews")
def api_reviews(request: Request, me: User = Depends(clinician)) -> list[dict[str, Any]]:
    return _open_rows(request, me)


def candidate_segs(request: Request, row: Any) -> list[dict[str, Any]]:
    """The SEGs a reviewer may pick for this case: the model's, and every SEG in Orthanc that
    references the case's series (from a workstation, or the editor's revisions)."""
    renderer = _renderer(request)
    model = _result(request, row.result_id)
    found: dict[str, dict[str, Any]] = {}
    if model is not None and model.series_uid:
        found[model.series_uid] = {"uid": model.series_uid, "origin": "model",
                                   "description": f"{model.algorithm} {model.version}"}
    series = _series(request, row.source_series_uid)
    study_uid = series["study_uid"] if series else None
    if study_uid:
        for ref in renderer.orthanc.find_series(StudyInstanceUID=study_uid, Modality="SEG"):
            if ref.series_uid in found:
                continue
            try:
                ds = renderer.seg_dataset(ref.series_uid)
            except RadflowError:
                continue
            if row.source_series_uid in [s.SeriesInstanceUID for s in
                                         ds.get("ReferencedSeriesSequence", [])]:
                found[ref.series_uid] = {
                    "uid": ref.series_uid, "description": str(ds.get("SeriesDescription", "")),
                    "origin": "revision" if ds.get("ContentLabel") == "CORRECTION"
                    else "workstation"}
    return list(found.values())


def _history(request: Request, row: Any) -> list[dict[str, Any]]:
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import AuditEvent

    with session_scope(_ctx(request).catalog_url) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.subject == f"review:{row.key}")
                              .order_by(col(AuditEvent.seq)))
        return [{"at": as_utc(e.time).isoformat(timespec="seconds"), "actor": e.actor,
                 "action": e.action, "detail": json.loads(e.detail or "{}")} for e in events]


@router.get("/reviews/{review_id}")
def case_page(request: Request, review_id: RowId, me: User = Depends(clinician)) -> Response:
    from radflow.web.app import render
    from radflow.web.render import PRESETS

    row = _review(request, review_id, me)
    segs = candidate_segs(request, row)
    stack = _stack(request, row.source_series_uid)
    chosen = request.query_params.get("seg") or (segs[0]["uid"] if segs else None)
    if chosen is not None and chosen not in {s["uid"] for s in segs}:
        raise HTTPException(404, f"{chosen} is not a SEG of this case")
    labels = _labels(request, chosen, row.source_series_uid) if chosen else None
    busiest = int(labels.labels.reshape(labels.labels.shape[0], -1).astype(bool).sum(1).argmax()) \
        if labels is not None else stack.hu.shape[0] // 2
    asked = request.query_params.get("z", "")
    if asked.isdigit() and int(asked) < stack.hu.shape[0]:
        busiest = int(asked)  # e.g. the slice just edited
    return render(request, "case.html", {
        "review": _row(request, row), "segs": segs, "chosen": chosen,
        "segments": labels.segments if labels else [], "slices": stack.hu.shape[0],
        "rows": stack.hu.shape[1], "columns": stack.hu.shape[2], "start": busiest,
        "presets": list(PRESETS), "history": _history(request, row),
        "is_open": row.status.value == "open", "comment_max": 1000,
        "flash": request.session.pop("flash", None),
        "kept": request.session.pop("kept", None)})


@router.post("/reviews/{review_id}/decision")
def decide(request: Request, review_id: RowId, csrf: str | None = Form(None),
           decision: str = Form(...), comment: str = Form(""),
           corrected_seg_uid: str | None = Form(None),
           me: User = Depends(clinician)) -> Response:
    """Record the decision (the reviewer is the log-in's subject) and resume the case run
    (:mod:`radflow_review.decisions`). A review decided already answers who decided it and
    when, on the case page."""
    from radflow.enums import ReviewStatus
    from radflow_review.decision import ReviewDecision
    from radflow_review.decisions import AlreadyDecided, deliver, record_decision

    check_csrf(request, csrf)
    row = _review(request, review_id, me)
    if decision not in ("accept", "reject", "corrected"):
        raise HTTPException(422, f"unknown decision {decision!r}: accept, reject or corrected")
    chosen = (corrected_seg_uid or "").strip() or None
    if decision == "corrected" and row.status == ReviewStatus.OPEN:
        if not chosen or chosen not in {s["uid"] for s in candidate_segs(request, row)
                                        if s["origin"] != "model"}:
            # back to the case page, the comment kept, the message next to the SEG field
            request.session["kept"] = {"review": review_id, "comment": comment[:1000],
                                       "error": "Corrected needs a corrected SEG of this case: "
                                       "save your edits as a revision, or pick a SEG here."}
            return RedirectResponse(f"/reviews/{review_id}", 303)
    elif decision != "corrected":
        chosen = None
    try:
        run_input = ReviewDecision(decision=decision, comment=comment, reviewer=me.sub,
                                   corrected_seg_uid=chosen)
    except ValueError as exc:
        raise HTTPException(422, f"invalid decision: {exc.errors()[0]['msg']}") from exc
    ctx = _ctx(request)
    try:
        entry = record_decision(ctx.catalog_url, review_id, run_input)
    except AlreadyDecided as exc:
        request.session["flash"] = exc.message
        return RedirectResponse(f"/reviews/{review_id}", 303)
    try:
        deliver(ctx.catalog_url, entry, ctx.prefect())
        resumed = "the case run resumed."
    except RadflowError as exc:  # pending in the outbox: the review keeper resumes it
        resumed = f"the case run is resumed shortly ({exc.message})."
    request.session["flash"] = f"Review {review_id}: {decision} recorded; {resumed}"
    return RedirectResponse("/reviews", 303)


@router.post("/api/reviews/{review_id}/revisions")
async def save_revision(request: Request, review_id: RowId,
                        me: User = Depends(clinician)) -> Response:
    """Store the editor's label map as a new SEG revision in Orthanc; returns its UID.

    Body: ``{"corrects": SEG UID, "slices": {"<z>": "data:image/png;base64,..."}}``; slices not
    sent keep the corrected SEG's labels. Header ``X-CSRF-Token``.
    """
    from starlette.concurrency import run_in_threadpool

    check_csrf(request, request.headers.get("x-csrf-token"))
    try:
        body = await request.json()
        corrects = str(body["corrects"])
        slices = {int(z): str(v) for z, v in dict(body["slices"]).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(422, "expected {corrects: SEG UID, slices: {z: PNG data URL}}") from exc
    return await run_in_threadpool(_store_revision, request, review_id, me, corrects, slices)


def _store_revision(request: Request, review_id: int, me: User, corrects: str,
                    slices: dict[int, str]) -> Response:
    from radflow.audit import record
    from radflow.enums import ReviewStatus
    from radflow.web.render import decode_label_png
    from radflow_review.revision import write_revision

    row = _review(request, review_id, me)
    if row.status != ReviewStatus.OPEN:
        raise HTTPException(409, f"review {review_id} was already decided")
    segs = candidate_segs(request, row)
    if not UID.match(corrects) or corrects not in {s["uid"] for s in segs}:
        raise HTTPException(422, f"{corrects} is not a SEG of this case")
    renderer = _renderer(request)
    stack = _stack(request, row.source_series_uid)
    base = _labels(request, corrects, row.source_series_uid)
    labels = base.labels.copy()
    allowed = {s["number"] for s in base.segments}
    try:
        for z, data in slices.items():
            if not 0 <= z < labels.shape[0]:
                raise DicomInputError(f"slice {z} is outside the series",
                                      fix="save again from the case page")
            raw = base64.b64decode(data.split(",", 1)[-1], validate=True)
            labels[z] = decode_label_png(raw, labels.shape[1:], allowed)
        revision = 1 + sum(s["origin"] == "revision" for s in segs)
        ds = write_revision(stack.datasets, base.dataset, labels, reviewer=me.sub,
                            revision=revision)
    except (DicomInputError, ValueError) as exc:
        raise HTTPException(422, getattr(exc, "message", str(exc))) from exc
    renderer.orthanc.store_dataset(ds)
    uid = str(ds.SeriesInstanceUID)
    renderer.forget(uid)
    record(_ctx(request).catalog_url, actor=me.sub, action="review.revision_saved",
           subject=f"review:{row.key}",
           detail={"seg_uid": uid, "corrects": corrects, "revision": revision,
                   "edited_slices": sorted(slices)})
    voxels = {int(n): int((labels == n).sum()) for n in sorted(allowed)}
    return JSONResponse({"seg_uid": uid, "revision": revision, "voxels": voxels})


def pages() -> Any:
    from radflow.web import WebPages

    return WebPages(router=router, templates=TEMPLATES,
                    nav=(("My reviews", "/reviews", CLINICAL_ROLES),))
