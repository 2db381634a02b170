"""The site's data in the browser: the catalog dashboard (*Explore*), the cohort builder
(*Cohorts*), the series browser and the series viewer.

Rights: metadata, counts and cohorts need one of :data:`EXPLORE_ROLES`; starting a pipeline
one of :data:`RUN_ROLES`; pixels (slices and overlays) a clinical role. Every image view is
written to the site's audit log (``explore.series_viewed``: who, which series, when) once per
log-in and series, whether through the viewer page or its image routes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response

from radflow.errors import ConfigurationError, DicomInputError, RadflowError
from radflow.web.auth import CLINICAL_ROLES, User, check_csrf, clinician, requiring

router = APIRouter()
TEMPLATES = Path(__file__).parent / "templates"
EXPLORE_ROLES = ("researcher", "radiologist", "data-steward", "admin")
RUN_ROLES = ("researcher", "radiologist", "admin")
explorer = requiring(*EXPLORE_ROLES)
runner = requiring(*RUN_ROLES)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PAGE = 50
VIEW_AUDIT_SECONDS = 3600  # one audit event per log-in and series per hour


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


def _url(request: Request) -> str:
    return _ctx(request).catalog_url


def _flash(request: Request) -> Any:
    return request.session.pop("flash", None)


# ---------------------------------------------------------------- dashboard


def _state(request: Request) -> dict[str, list[str]]:
    from radflow.explore.facets import parse_state

    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    try:
        return parse_state(query)
    except ConfigurationError as exc:
        raise HTTPException(422, f"{exc.message}; {exc.fix}") from exc


def _link(state: dict[str, list[str]], key: str, value: str, add: bool) -> str:
    """The dashboard's address with ``key=value`` added (or removed)."""
    changed = {k: list(v) for k, v in state.items()}
    values = set(changed.get(key, []))
    values = values | {value} if add else values - {value}
    changed[key] = sorted(values)
    pairs = [(k, v) for k in sorted(changed) for v in changed[k]]
    return "/explore" + (f"?{urlencode(pairs)}" if pairs else "")


@router.get("/explore")
def dashboard(request: Request, me: User = Depends(explorer)) -> Response:
    from radflow.explore.facets import chips, definition_of, facet_counts
    from radflow.web.app import render

    state = _state(request)
    began = time.perf_counter()
    counts = facet_counts(_url(request), state)
    took_ms = (time.perf_counter() - began) * 1000
    for facet in counts["facets"]:
        for bucket in facet["buckets"]:
            bucket["href"] = _link(state, facet["key"], bucket["key"], not bucket["chosen"])
    active = chips(state)
    for chip in active:
        chip["href"] = _link(state, chip["key"], chip["value"], False)
    definition = definition_of(state)
    series = _series_rows(request, definition, 0, 20, newest=True)
    return render(request, "explore.html", {
        "counts": counts, "chips": active, "took_ms": took_ms, "series": series,
        "definition": definition.canonical() if definition else None,
        "builder": "/cohorts/new?" + urlencode({"definition": json.dumps(definition.canonical())})
        if definition else "/cohorts/new", "may_view": me.has(*CLINICAL_ROLES)})


@router.get("/api/explore")
def dashboard_api(request: Request, me: User = Depends(explorer)) -> dict[str, Any]:
    from radflow.explore.facets import definition_of, facet_counts

    state = _state(request)
    definition = definition_of(state)
    return {**facet_counts(_url(request), state), "state": state,
            "definition": definition.canonical() if definition else None,
            "hash": definition.content_hash if definition else None}


# ---------------------------------------------------------------- series lists


def _series_rows(request: Request, definition: Any, offset: int, limit: int,
                 newest: bool = False) -> list[dict]:
    """Series (of a definition, or all) with their findings and results: oldest study first,
    or the last cataloged first (``newest``: no sort of the whole table)."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult, Finding, Series
    from radflow.cohorts import to_sql

    with session_scope(_url(request)) as session:
        query = select(Series)
        if definition is not None:
            query = query.where(to_sql(definition.where))
        order = (col(Series.id).desc(),) if newest else (col(Series.study_date), col(Series.id))
        rows = list(session.exec(query.order_by(*order).offset(offset).limit(limit)))
        ids = [r.id for r in rows]
        uids = [r.series_uid for r in rows]
        findings: dict[int, list[str]] = {}
        for pk, code in session.exec(select(Finding.series_pk, Finding.code)
                                     .where(col(Finding.series_pk).in_(ids))):
            findings.setdefault(pk, []).append(code)
        results: dict[str, dict[str, int]] = {}
        for uid, kind, status, n in session.exec(
                select(DerivedResult.source_series_uid, DerivedResult.kind, DerivedResult.status,
                       func.count()).where(col(DerivedResult.source_series_uid).in_(uids))
                .group_by(DerivedResult.source_series_uid, DerivedResult.kind,
                          DerivedResult.status)):
            key = f"{getattr(kind, 'value', kind)} {getattr(status, 'value', status)}"
            results.setdefault(uid, {})[key] = results.setdefault(uid, {}).get(key, 0) + n
        return [{"uid": r.series_uid, "modality": r.modality, "description": r.series_description,
                 "body_part": r.body_part, "study_date": r.study_date, "instances": r.num_instances,
                 "manufacturer": r.manufacturer, "status": r.status.value,
                 "findings": sorted(set(findings.get(r.id, []))),
                 "results": sorted(results.get(r.series_uid, {}).items())} for r in rows]


# ---------------------------------------------------------------- cohorts


def _known_fields(data: Any) -> list[str]:
    """The fields a shared definition names that this radflow does not know (all of them, not
    only the first)."""
    from radflow.cohorts import FIELDS

    unknown: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "field" in node and node["field"] not in FIELDS:
                unknown.add(str(node["field"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return sorted(unknown)


def _empty_fields(request: Request, definition: Any) -> list[str]:
    """Fields a definition filters on that no series of this site has a value for: the
    condition can only match nothing (or everything, for ne/not_in)."""
    from sqlalchemy import func
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Finding, Series

    used: set[str] = set()

    def walk(node: Any) -> None:
        if "field" in node:
            used.add(node["field"])
            return
        key, value = next(iter(node.items()))
        for child in value if key in ("all", "any") else [value] if key == "not" else []:
            walk(child)

    walk(definition.where)
    empty = []
    with session_scope(_url(request)) as session:
        for field in sorted(used):
            if field == "finding":
                n = session.exec(select(func.count()).select_from(Finding)).one()
            else:
                column = getattr(Series, field)
                n = session.exec(select(func.count()).select_from(Series)
                                 .where(column.is_not(None))).one()
            if n == 0:
                empty.append(field)
    return empty


def _parse(request: Request, text: str) -> Any:
    """A definition from JSON text, or 422 naming what is wrong (every unknown field)."""
    from radflow.cohorts import CohortDefinition

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"the definition is not JSON: {exc}") from exc
    unknown = _known_fields(data)
    if unknown:
        raise HTTPException(422, f"this site does not know the field(s) {', '.join(unknown)}: "
                                 "the cohort was made with another radflow version; remove "
                                 "those conditions or upgrade this site")
    try:
        return CohortDefinition.parse(data)
    except ConfigurationError as exc:
        raise HTTPException(422, f"{exc.message}; {exc.fix}") from exc


@router.get("/cohorts")
def cohorts(request: Request, me: User = Depends(explorer)) -> Response:
    from radflow.catalog.db import session_scope
    from radflow.cohorts import count_series, list_cohorts, load_cohort
    from radflow.web.app import render

    rows = []
    with session_scope(_url(request)) as session:
        for record in list_cohorts(session):
            definition, _ = load_cohort(session, record.name)
            rows.append({"name": record.name, "hash": record.content_hash,
                         "description": record.description,
                         "count": count_series(session, definition)})
    return render(request, "cohorts.html", {"rows": rows, "flash": _flash(request)})


@router.get("/cohorts/new")
def builder(request: Request, definition: str | None = None,
            me: User = Depends(explorer)) -> Response:
    from radflow.cohorts.definition import FIELDS, OPS
    from radflow.web.app import render

    start = None
    if definition:
        start = _parse(request, definition).canonical()
    fields = {name: {"kind": spec.kind, "description": spec.description,
                     "ops": sorted(OPS[spec.kind])} for name, spec in FIELDS.items()}
    return render(request, "cohort_builder.html", {
        "fields": fields, "start": start, "flash": _flash(request),
        "imported": request.session.pop("imported", None)})


@router.post("/api/cohorts/count")
async def count_api(request: Request, me: User = Depends(explorer)) -> Response:
    """``{"definition": {...}}`` -> its count at this site, its canonical JSON and hash, and
    the fields it uses that this site has no value for."""
    from starlette.concurrency import run_in_threadpool

    from radflow.catalog.db import session_scope
    from radflow.cohorts import count_series

    try:
        body = await request.json()
        text = json.dumps(body["definition"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected {definition: {...}}"}, 422)

    def work() -> Response:
        try:
            definition = _parse(request, text)
        except HTTPException as exc:
            return JSONResponse({"error": exc.detail}, 422)
        with session_scope(_url(request)) as session:
            n = count_series(session, definition)
        return JSONResponse({"count": n, "hash": definition.content_hash,
                             "canonical": definition.canonical(),
                             "empty_fields": _empty_fields(request, definition)})
    return await run_in_threadpool(work)


@router.post("/cohorts")
def save(request: Request, csrf: str | None = Form(None), name: str = Form(""),
         definition: str = Form(""), description: str = Form(""),
         replace: str | None = Form(None), me: User = Depends(explorer)) -> Response:
    from radflow.audit import record
    from radflow.catalog.db import session_scope
    from radflow.cohorts import save_cohort

    check_csrf(request, csrf)
    if not NAME.match(name) or name in ("new", "import"):
        raise HTTPException(422, f"cohort name {name!r}: use 1-64 letters, digits, '_', '.' or "
                                 "'-', starting with a letter or digit")
    parsed = _parse(request, definition)
    try:
        with session_scope(_url(request)) as session:
            saved = save_cohort(session, name, parsed, description=description.strip() or None,
                                replace=bool(replace))
            content_hash = saved.content_hash
    except ConfigurationError as exc:
        raise HTTPException(409, f"{exc.message}; tick 'replace' to overwrite it") from exc
    record(_url(request), actor=me.sub, action="cohort.saved", subject=f"cohort:{name}",
           detail={"hash": content_hash})
    request.session["flash"] = f"Cohort {name} saved ({content_hash[:19]}…)."
    return RedirectResponse(f"/cohorts/{name}", 303)


@router.post("/cohorts/import")
async def import_cohort(request: Request, csrf: str | None = Form(None),
                        file: UploadFile = File(...), me: User = Depends(explorer)) -> Response:
    """A shared definition (the JSON a download gives): opened in the builder to be named and
    saved; fields this site does not know are named."""
    check_csrf(request, csrf)
    data = await file.read(256 * 1024 + 1)
    if len(data) > 256 * 1024:
        raise HTTPException(413, "a cohort definition is at most 256 KiB")
    text = data.decode("utf-8", errors="replace")
    definition = _parse(request, text)  # 422 names unknown fields
    request.session["imported"] = file.filename or "a file"
    return RedirectResponse("/cohorts/new?" + urlencode(
        {"definition": json.dumps(definition.canonical())}), 303)


def _cohort(request: Request, name: str) -> tuple[Any, Any]:
    from radflow.catalog.db import session_scope
    from radflow.cohorts import load_cohort

    try:
        with session_scope(_url(request)) as session:
            definition, record = load_cohort(session, name)
            session.expunge(record)
            return definition, record
    except ConfigurationError as exc:
        raise HTTPException(404, exc.message) from exc


@router.get("/cohorts/{name}/definition.json")
def download(request: Request, name: str, me: User = Depends(explorer)) -> Response:
    definition, _ = _cohort(request, name)
    body = json.dumps(definition.canonical(), indent=2, sort_keys=True) + "\n"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="cohort-{safe}.json"'})


@router.get("/cohorts/{name}")
def cohort_page(request: Request, name: str, page: int = 0,
                me: User = Depends(explorer)) -> Response:
    from radflow.catalog.db import session_scope
    from radflow.cohorts import count_series
    from radflow.web.app import render

    definition, record = _cohort(request, name)
    with session_scope(_url(request)) as session:
        total = count_series(session, definition)
    page = max(0, min(page, max(0, (total - 1) // PAGE)))
    return render(request, "cohort.html", {
        "name": name, "record": record, "total": total, "page": page, "pages": -(-total // PAGE),
        "definition": json.dumps(definition.canonical(), indent=2, sort_keys=True),
        "series": _series_rows(request, definition, page * PAGE, PAGE),
        "may_run": me.has(*RUN_ROLES), "may_view": me.has(*CLINICAL_ROLES),
        "runs": _runs(request, name), "flash": _flash(request),
        "builder": "/cohorts/new?" + urlencode({"definition": json.dumps(definition.canonical())})})


def _runs(request: Request, name: str) -> list[dict[str, Any]]:
    """This cohort's pipeline runs started here (newest first), with progress from the
    catalog: how many of its series have a SEG and an SR."""
    api = _ctx(request).prefect()
    try:
        runs = api.flow_runs_tagged(f"cohort:{name}", limit=5)
    except RadflowError as exc:
        return [{"error": f"the site's Prefect server does not answer: {exc.message}"}]
    out = []
    for run in runs:
        review = bool(run.parameters.get("review"))
        out.append({"id": run.id, "name": run.name, "state": run.state, "message": run.message,
                    "final": run.is_final, "ui": api.flow_run_ui(run.id), "review": review})
    if out:
        out[0]["progress"] = _progress(request, name)
    return out


def _progress(request: Request, name: str) -> dict[str, int]:
    from sqlalchemy import func
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult, Series
    from radflow.cohorts import to_sql
    from radflow.enums import ResultKind

    definition, _ = _cohort(request, name)
    with session_scope(_url(request)) as session:
        uids = select(Series.series_uid).where(to_sql(definition.where))
        total = session.exec(select(func.count()).select_from(Series)
                             .where(to_sql(definition.where))).one()
        done = dict(session.exec(
            select(DerivedResult.kind, func.count(func.distinct(DerivedResult.source_series_uid)))
            .where(col(DerivedResult.source_series_uid).in_(uids),
                   col(DerivedResult.kind).in_([ResultKind.SEG, ResultKind.SR]))
            .group_by(DerivedResult.kind)).all())
    return {"series": total, "seg": int(done.get(ResultKind.SEG, 0)),
            "sr": int(done.get(ResultKind.SR, 0))}


@router.get("/api/cohorts/{name}/runs")
def runs_api(request: Request, name: str, me: User = Depends(explorer)) -> list[dict[str, Any]]:
    _cohort(request, name)
    return _runs(request, name)


@router.post("/cohorts/{name}/runs")
def start_run(request: Request, name: str, csrf: str | None = Form(None),
              review: str | None = Form(None), me: User = Depends(runner)) -> Response:
    """Start segment-and-quantify over the cohort on the site's worker (as `radflow pipeline
    run --cohort NAME [--review]` does), tagged with the cohort and the user."""
    from radflow.audit import record

    check_csrf(request, csrf)
    _cohort(request, name)
    ctx = _ctx(request)
    parameters = {"cohort": name, "series_uids": None, "model": "radflow-abdomen-demo",
                  "params": "default", "site": ctx.name, "force": False, "max_parallel": 2,
                  "isolation": "inline", "review": bool(review)}
    try:
        started = ctx.prefect().create_flow_run(
            f"segment-and-quantify/{ctx.name}", parameters,
            tags=("radflow", "web", f"cohort:{name}"))
    except RadflowError as exc:
        raise HTTPException(502, f"the run did not start: {exc.message}") from exc
    record(_url(request), actor=me.sub, action="pipeline.started",
           subject=f"flow_run:{started.id}", detail={"cohort": name, "review": bool(review),
                                                     "flow": "segment-and-quantify"})
    request.session["flash"] = (f"segment-and-quantify started on cohort {name}"
                                + (" with review" if review else "") + f" ({started.name}).")
    return RedirectResponse(f"/cohorts/{name}", 303)


# ---------------------------------------------------------------- series


def _series(request: Request, uid: str) -> dict[str, Any]:
    """A series' catalog rows: the series, its study, its findings, the SEGs that reference
    it, its results and their feature values (404 when the catalog has no such series)."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult, Finding, Instance, Series, Study
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
        segs = list(session.exec(select(Series).where(Series.source_series_uid == uid,
                                                      Series.modality == "SEG")
                                 .order_by(col(Series.ingested_at))))
        results = list(session.exec(select(DerivedResult).where(
            DerivedResult.source_series_uid == uid).order_by(col(DerivedResult.id))))
        order = [(i.orthanc_id, i.sop_instance_uid) for i in session.exec(
            select(Instance).where(Instance.series_pk == series.id)
            .order_by(col(Instance.position_z), col(Instance.instance_number)))]
        table = feature_table(session, series_uids=[uid]).rows
        by_uid = {r.series_uid: r for r in results if r.series_uid}
        return {
            "row": series.model_dump(), "study": study.model_dump(), "findings": findings,
            "order": order,
            "segs": [{"uid": s.series_uid, "description": s.series_description,
                      "orthanc_id": s.orthanc_id,
                      "result": ({"id": by_uid[s.series_uid].id,
                                  "status": by_uid[s.series_uid].status.value,
                                  "algorithm": by_uid[s.series_uid].algorithm,
                                  "version": by_uid[s.series_uid].version,
                                  "parent_id": by_uid[s.series_uid].parent_id}
                                 if s.series_uid in by_uid else None)} for s in segs],
            "results": [{"id": r.id, "kind": r.kind.value, "status": r.status.value,
                         "algorithm": r.algorithm, "version": r.version,
                         "status_by": r.status_by, "series_uid": r.series_uid,
                         "parent_id": r.parent_id} for r in results],
            "features": table}


def _pivot(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Feature values as a table: one row per feature, one column per segment."""
    segments = sorted({(r["segment_number"], r["segment_label"]) for r in rows})
    features: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = features.setdefault(r["feature"], {"unit": r["unit"], "code": r["code"],
                                                   "values": {}})
        entry["values"][r["segment_number"]] = r["value"]
    return {"segments": segments, "features": sorted(features.items())}


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
    if may_view and data["order"]:
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
        "explorer": f"{ctx.orthanc_url}/app/explorer.html#series?uuid={row['orthanc_id']}",
        "dicomweb_root": f"{ctx.orthanc_url}/dicom-web",
        "dicomweb": f"{ctx.orthanc_url}/dicom-web/studies/{row['study_uid']}/series/{uid}"})


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
def slice_png_route(request: Request, uid: str, z: int, preset: str | None = None,
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
def label_png_route(request: Request, uid: str, seg_uid: str, z: int,
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


def pages() -> Any:
    from radflow.web import WebPages

    return WebPages(router=router, templates=TEMPLATES, nav=(
        ("Explore", "/explore", EXPLORE_ROLES), ("Cohorts", "/cohorts", EXPLORE_ROLES)))
