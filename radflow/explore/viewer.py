"""The series page of *Explore*: a series' catalog rows, findings, SEGs, results and feature
values, and its viewer (slices with window presets, SEG overlays as label images).

Pixels need a clinical role, and every image view is written to the site's audit log
(``explore.series_viewed``) once per log-in, series and hour, whether through the page or its
image routes.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from radflow.cohorts.images import is_image_series
from radflow.errors import DicomInputError, RadflowError
from radflow.explore import units
from radflow.explore.web import UID, _ctx, _url, explorer
from radflow.web.auth import CLINICAL_ROLES, User, clinician, either
from radflow.web.security import RowId

router = APIRouter()
VIEW_AUDIT_SECONDS = 3600  # one audit event per log-in and series per hour


def _series(request: Request, uid: str) -> dict[str, Any]:
    """A series' catalog rows: the series, its study, its findings, the SEGs that reference
    it (the current results' first), its results (which are current) and the current results'
    feature values (404 when the catalog has no such series)."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult, Finding, Instance, Series, Study
    from radflow.results import revisions
    from radflow.results.current import current_result_ids
    from radflow.results.store import feature_table

    if not UID.match(uid):
        raise HTTPException(404, f"{uid!r} is not a DICOM UID")
    with session_scope(_url(request)) as session:
        found = session.exec(select(Series, Study).where(Series.series_uid == uid,
                                                         Series.study_pk == Study.id)).first()
        if found is None:
            raise HTTPException(404, f"the catalog of site {_ctx(request).name} has no series "
                                     f"{uid}")
        series, study = found
        findings = [{"code": f.code, "severity": f.severity.value, "message": f.message}
                    for f in session.exec(select(Finding).where(Finding.series_pk == series.id))]
        made = _made_from(session, uid)
        segs = [s for s in made if s.modality == "SEG" and s.source_series_uid == uid]
        source = session.exec(select(Series).where(
            Series.series_uid == series.source_series_uid)).first() \
            if series.source_series_uid else None
        results = list(session.exec(select(DerivedResult).where(
            DerivedResult.source_series_uid == uid).order_by(col(DerivedResult.id))))
        order = [(i.orthanc_id, i.sop_instance_uid) for i in session.exec(
            select(Instance).where(Instance.series_pk == series.id)
            .order_by(col(Instance.position_z), col(Instance.instance_number)))]
        table = feature_table(session, series_uids=[uid]).rows
        current = set(session.exec(current_result_ids([uid])).all())
        by_uid = {r.series_uid: r for r in results if r.series_uid}
        titles = revisions.result_titles(results)  # "revision 2 of <the model's SEG>"
        segs.sort(key=lambda s: s.series_uid not in by_uid or by_uid[s.series_uid].id
                  not in current)  # the current SEGs first (stable: then by ingestion)
        return {
            "row": series.model_dump(), "study": study.model_dump(), "findings": findings,
            "order": order, "derived": [_brief(s) for s in made],
            "source": _brief(source) if source is not None else None,
            "is_image": is_image_series(series.modality, series.manufacturer),
            "segs": [{"uid": s.series_uid, "description": s.series_description,
                      "orthanc_id": s.orthanc_id,
                      "current": s.series_uid in by_uid and by_uid[s.series_uid].id in current,
                      "result": ({"id": by_uid[s.series_uid].id,
                                  "status": by_uid[s.series_uid].status.value,
                                  "algorithm": by_uid[s.series_uid].algorithm,
                                  "version": by_uid[s.series_uid].version,
                                  "parent_id": by_uid[s.series_uid].parent_id,
                                  "title": titles[by_uid[s.series_uid].id]}
                                 if s.series_uid in by_uid else None)} for s in segs],
            "results": [{"id": r.id, "kind": r.kind.value, "status": r.status.value,
                         "algorithm": r.algorithm, "version": r.version,
                         "status_by": r.status_by, "series_uid": r.series_uid,
                         "parent_id": r.parent_id, "current": r.id in current,
                         "title": titles[r.id]}
                        for r in results],
            "features": table}


def _made_from(session: Any, uid: str) -> list[Any]:
    """The derived objects made from a series: those that reference it, those the catalog
    records as its results, and those made from either (an SR that references the SEG it
    measured), in the order they were cataloged."""
    from sqlalchemy import or_
    from sqlmodel import col, select

    from radflow.catalog.models import DerivedResult, Series

    results = select(DerivedResult.series_uid).where(DerivedResult.source_series_uid == uid)
    first = list(session.exec(select(Series).where(or_(
        Series.source_series_uid == uid, col(Series.series_uid).in_(results)))))
    near = {s.series_uid for s in first}
    second = list(session.exec(select(Series).where(col(Series.source_series_uid).in_(near)))) \
        if near else []
    found = {s.id: s for s in first + second if s.series_uid != uid}
    return sorted(found.values(), key=lambda s: (s.ingested_at, s.id))


def _brief(s: Any) -> dict[str, Any]:
    """A series as a line of a list: what it is and who made it."""
    return {"uid": s.series_uid, "modality": s.modality, "description": s.series_description,
            "maker": " ".join(p for p in (s.manufacturer, s.model) if p),
            "instances": s.num_instances}


def _pivot(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Feature values as a table: one row per feature, one column per segment, each value
    with its unit as people write them (HU, mL, mm: :mod:`radflow.explore.units`)."""
    segments = sorted({(r["segment_number"], r["segment_label"]) for r in rows})
    features: dict[str, dict[str, Any]] = {}
    for r in rows:
        shown, written = units.show(r["value"], r["unit"])
        entry = features.setdefault(r["feature"], {"unit": written, "ucum": r["unit"],
                                                   "code": r["code"], "values": {}})
        entry["values"][r["segment_number"]] = shown
    return {"segments": segments, "features": sorted(features.items())}


def _facts(row: dict[str, Any]) -> dict[str, str]:
    """The series' measures as a page shows them."""
    return {key: units.number(row[key]) if row[key] is not None else "–"
            for key in ("kvp", "field_strength", "pixel_spacing", "slice_thickness",
                        "slice_spacing")}


def _seg_kinds(request: Request, segs: list[dict[str, Any]]) -> None:
    """Each SEG's origin (the model's, a reviewer's revision, a workstation's) from its
    header; a SEG Orthanc no longer has is marked missing."""
    from radflow.web.render import shared

    renderer = shared(request)
    for seg in segs:
        try:
            ds = renderer.seg_dataset(seg["uid"])
        except RadflowError as exc:
            seg["origin"], seg["error"] = "missing", exc.message
            continue
        if ds.get("ContentLabel") == "CORRECTION":
            seg["origin"] = "revision"
        elif seg["result"] is not None:
            seg["origin"] = "model"
        else:
            seg["origin"] = "workstation"
        seg["segments"] = [{"number": int(s.SegmentNumber), "label": str(s.SegmentLabel),
                            "colour": colour_of(s)} for s in ds.SegmentSequence]


def colour_of(segment: Any) -> list[int]:
    from radflow.web.render import colour

    return colour(segment)


def _audit_view(request: Request, me: User, uid: str, how: str) -> None:
    """Record that ``me`` viewed the pixels of series ``uid`` (once per log-in, series and
    hour)."""
    from radflow.audit import record

    seen = request.session.setdefault("viewed", {})
    if time.time() - float(seen.get(uid, 0)) < VIEW_AUDIT_SECONDS:
        return
    record(_url(request), actor=me.sub, action="explore.series_viewed", subject=f"series:{uid}",
           detail={"how": how})
    seen[uid] = time.time()
    if len(seen) > 200:  # the session cookie stays small
        for old in sorted(seen, key=seen.get)[:100]:
            seen.pop(old)
    request.session["viewed"] = seen


@router.get("/series/{uid}")
def series_page(request: Request, uid: str, me: User = Depends(explorer)) -> Response:
    from radflow.web.app import render
    from radflow.web.render import PRESETS

    data = _series(request, uid)
    ctx = _ctx(request)
    may_view = me.has(*CLINICAL_ROLES)
    start, problem = 0, None
    if may_view and not data["is_image"]:
        problem = ("it is a derived object, not an image series: its source series' page "
                   "shows it over the images")
    elif may_view and data["order"]:
        _seg_kinds(request, data["segs"])
        start = len(data["order"]) // 2
        _audit_view(request, me, uid, "viewer")
    elif may_view:
        problem = "the catalog lists no instances of this series"
    row, study = data["row"], data["study"]
    return render(request, "series.html", {
        "uid": uid, "row": row, "study": study, "findings": data["findings"],
        "segs": data["segs"], "results": data["results"], "features": _pivot(data["features"]),
        "slices": len(data["order"]), "rows": row["rows"] or 0, "columns": row["columns"] or 0,
        "start": start, "presets": PRESETS, "may_view": may_view, "problem": problem,
        "derived": data["derived"], "source": data["source"], "is_image": data["is_image"],
        "facts": _facts(row), "pixel_roles": either(CLINICAL_ROLES), "links": {
            "explorer": f"{ctx.orthanc_url}/app/explorer.html#series?uuid={row['orthanc_id']}",
            "dicomweb_root": f"{ctx.orthanc_url}/dicom-web",
            "dicomweb": f"{ctx.orthanc_url}/dicom-web/studies/{row['study_uid']}/series/{uid}",
        } if may_view else None})  # Orthanc gives pixels: no links for roles without them


def _order(request: Request, uid: str, z: int) -> tuple[list[tuple[str, str]], Any]:
    """The series' instances in slice order (cached per app), checked against ``z``."""
    cache = getattr(request.app.state, "slice_orders", None)
    if cache is None:
        cache = request.app.state.slice_orders = {}
    entry = cache.get(uid)
    if entry is None or time.time() - entry[0] > 60:
        data = _series(request, uid)
        entry = cache[uid] = (time.time(), data["order"], (data["row"]["rows"],
                                                           data["row"]["columns"]))
        if len(cache) > 256:
            cache.pop(next(iter(cache)))
    order, shape = entry[1], entry[2]
    if not 0 <= z < len(order):
        raise HTTPException(404, f"slice {z} is outside 0-{len(order) - 1}")
    return order, shape


@router.get("/series/{uid}/slices/{z}.png")
def slice_png_route(request: Request, uid: str, z: RowId, preset: str | None = None,
                    c: float | None = None, w: float | None = None,
                    me: User = Depends(clinician)) -> Response:
    from radflow.web.render import png, shared, window

    order, _ = _order(request, uid, z)
    try:
        centre, width = window(preset, c, w)
        hu = shared(request).slice_hu(uid, order, z)
    except DicomInputError as exc:
        raise HTTPException(422, exc.message) from exc
    except RadflowError as exc:
        raise HTTPException(502, f"the slice cannot be read from Orthanc: {exc.message}") from exc
    _audit_view(request, me, uid, "slice")
    import numpy as np

    lo = centre - width / 2.0
    grey = np.clip((hu.astype(np.float32) - lo) / width * 255.0, 0, 255).astype(np.uint8)
    return Response(png(grey), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})


@router.get("/series/{uid}/labels/{seg_uid}/{z}.png")
def label_png_route(request: Request, uid: str, seg_uid: str, z: RowId,
                    me: User = Depends(clinician)) -> Response:
    from radflow.web.render import png, shared

    order, shape = _order(request, uid, z)
    if not UID.match(seg_uid):
        raise HTTPException(404, f"{seg_uid!r} is not a DICOM UID")
    try:
        labels = shared(request).label_slice(seg_uid, uid, order[z][1], z,
                                             (int(shape[0] or 0), int(shape[1] or 0)))
    except DicomInputError as exc:
        raise HTTPException(404, exc.message) from exc
    except RadflowError as exc:
        raise HTTPException(404 if getattr(exc, "status", None) == 404 else 502,
                            f"the SEG cannot be shown: {exc.message}") from exc
    _audit_view(request, me, uid, "overlay")
    return Response(png(labels), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})
