"""The clinicians' worklist: the case page (who the patient is; the image area and editor,
whose routes are in :mod:`radflow_review.views`; the decision form; the history), and its API.
The lists (*My reviews*, *Decided*) are in :mod:`radflow_review.worklist`.

Every route needs a log-in with a clinical role; acting on a review also needs the review to be
assigned to the user or to one of their roles (admins may act on any). A decision resumes the
suspended case run through the site's Prefect API with the reviewer's subject from the log-in.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from radflow.catalog.models.base import as_utc
from radflow.errors import DicomInputError, RadflowError
from radflow.results import revisions
from radflow.web.auth import CLINICAL_ROLES, User, check_csrf, clinician
from radflow.web.security import RowId
from radflow_review import worklist
from radflow_review.worklist import ctx as _ctx
from radflow_review.worklist import may_act
from radflow_review.worklist import result as _result
from radflow_review.worklist import review_row as _row
from radflow_review.worklist import series as _series

router = APIRouter()
router.include_router(worklist.router)  # My reviews, Decided
TEMPLATES = Path(__file__).parent / "templates"
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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


def candidate_segs(request: Request, row: Any) -> list[dict[str, Any]]:
    """The SEGs a reviewer may pick for this case: the model's, and every SEG in Orthanc that
    references the case's series (from a workstation, or the editor's revisions: each named
    "revision n of <the model's SEG>", :mod:`radflow.results.revisions`)."""
    renderer = _renderer(request)
    model = _result(request, row.result_id)
    of = f"{model.algorithm} {model.version}" if model is not None else "the model's SEG"
    found: dict[str, dict[str, Any]] = {}
    if model is not None and model.series_uid:
        found[model.series_uid] = {"uid": model.series_uid, "origin": "model",
                                   "description": of, "revision": None}
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
                number = revisions.number_of(ds)
                revised = ds.get("ContentLabel") == revisions.CONTENT_LABEL
                found[ref.series_uid] = {
                    "uid": ref.series_uid, "revision": number,
                    "description": revisions.title(number, of) if revised
                    else str(ds.get("SeriesDescription", "")),
                    "origin": "revision" if revised else "workstation"}
    return sorted(found.values(), key=lambda s: (s["origin"] != "model", s["revision"] or 0))


def _history(request: Request, row: Any, segs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The review's audit events, a SEG named as the case names it (``segs``) and slices
    numbered from 1 (as the page shows them)."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import AuditEvent

    names = {s["uid"]: s["description"] for s in segs}
    with session_scope(_ctx(request).catalog_url) as session:
        events = list(session.exec(select(AuditEvent).where(
            AuditEvent.subject == f"review:{row.key}").order_by(col(AuditEvent.seq))))
    history = []
    for e in events:
        detail = json.loads(e.detail or "{}")
        seg = detail.get("seg_uid") or detail.get("corrected_seg_uid")
        history.append({"at": as_utc(e.time).isoformat(timespec="seconds"), "actor": e.actor,
                        "action": e.action, "decision": detail.get("decision"),
                        "seg": names.get(seg, seg) if seg else None,
                        "slices": detail.get("slices") or  # from 1; before: from 0
                        [z + 1 for z in detail.get("edited_slices", [])]})
    return history


@router.get("/reviews/{review_id}")
def case_page(request: Request, review_id: RowId, me: User = Depends(clinician)) -> Response:
    from radflow.web.app import render
    from radflow.web.render import PRESETS

    row = _review(request, review_id, me)
    segs = candidate_segs(request, row)
    stack = _stack(request, row.source_series_uid)
    review = _row(request, row)  # a decided case opens on the SEG its decision took
    taken = next((s for s in segs if s["uid"] == review["taken_seg_uid"]), None)
    chosen = request.query_params.get("seg") or (taken or (segs[0] if segs else {})).get("uid")
    if chosen is not None and chosen not in {s["uid"] for s in segs}:
        raise HTTPException(404, f"{chosen} is not a SEG of this case")
    labels = _labels(request, chosen, row.source_series_uid) if chosen else None
    busiest = int(labels.labels.reshape(labels.labels.shape[0], -1).astype(bool).sum(1).argmax()) \
        if labels is not None else stack.hu.shape[0] // 2
    asked = request.query_params.get("z", "")
    if asked.isdigit() and int(asked) < stack.hu.shape[0]:
        busiest = int(asked)  # e.g. the slice just edited
    return render(request, "case.html", {
        "review": review, "segs": segs, "chosen": chosen, "taken": taken,
        "segments": labels.segments if labels else [], "slices": stack.hu.shape[0],
        "rows": stack.hu.shape[1], "columns": stack.hu.shape[2], "start": busiest,
        "presets": list(PRESETS), "history": _history(request, row, segs),
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
        resumed = "."
    except RadflowError as exc:  # pending in the outbox: the review keeper resumes it
        resumed = f" shortly ({exc.message})."
    request.session["flash"] = (f"Review {review_id}: {decision} recorded. Decided — the run "
                                f"resumes{resumed}")
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
    from radflow_review.revision import person_name, write_revision

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
                raise DicomInputError(f"slice {z + 1} is outside the series (slices 1-"
                                      f"{labels.shape[0]})",
                                      fix="save again from the case page")
            raw = base64.b64decode(data.split(",", 1)[-1], validate=True)
            labels[z] = decode_label_png(raw, labels.shape[1:], allowed)
        if (labels == base.labels).all():  # stores nothing, logs nothing
            name = next(s["description"] for s in segs if s["uid"] == corrects)
            raise DicomInputError(f"no voxel changed against {name}: nothing was stored",
                                  fix="edit the segmentation, or decide on it as it is")
        revision = revisions.next_number(s["revision"] for s in segs)
        of = next((s["description"] for s in segs if s["origin"] == "model"), "the model's SEG")
        ds = write_revision(stack.datasets, base.dataset, labels, revision=revision, of=of,
                            reviewer=person_name(request.session.get("user") or {"sub": me.sub}))
    except (DicomInputError, ValueError) as exc:
        raise HTTPException(422, getattr(exc, "message", str(exc))) from exc
    uid = str(ds.SeriesInstanceUID)
    voxels = {int(n): int((labels == n).sum()) for n in sorted(allowed)}
    saved = next((s for s in segs if s["uid"] == uid), None)
    if saved is not None:  # this very edit was saved before: that revision, nothing new
        return JSONResponse({"seg_uid": uid, "revision": saved["revision"], "voxels": voxels,
                             "existing": True})
    renderer.orthanc.store_dataset(ds)
    renderer.forget(uid)
    record(_ctx(request).catalog_url, actor=me.sub, action="review.revision_saved",
           subject=f"review:{row.key}",
           detail={"seg_uid": uid, "corrects": corrects, "revision": revision, "of": of,
                   "slices": sorted(z + 1 for z in slices)})  # numbered from 1, as the page
    return JSONResponse({"seg_uid": uid, "revision": revision, "voxels": voxels})


def pages() -> Any:
    from radflow.web import WebPages

    return WebPages(router=router, templates=TEMPLATES,
                    nav=(("My reviews", "/reviews", CLINICAL_ROLES),))
