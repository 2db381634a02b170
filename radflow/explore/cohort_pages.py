"""The cohort pages of *Explore*: the list of saved cohorts, the builder with its live count,
saving and importing a shared definition, a cohort's page (its series, page by page, and its
pipeline runs with their progress), and starting a run on it.

Rights as on the dashboard: cohorts need one of ``EXPLORE_ROLES``, starting a pipeline one of
``RUN_ROLES``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response

from radflow.cohorts.images import IMAGE_CONDITIONS
from radflow.errors import ConfigurationError, RadflowError
from radflow.explore.web import (
    NAME,
    PAGE,
    RUN_ROLES,
    _ctx,
    _flash,
    _series_rows,
    _url,
    explorer,
    runner,
)
from radflow.web.auth import CLINICAL_ROLES, User, check_csrf

router = APIRouter()
RUN_TOKEN = re.compile(r"[0-9a-f]{32}")  # rendered with a cohort's page: one run per form


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
        "fields": fields, "start": start, "flash": _flash(request), "image": IMAGE_CONDITIONS,
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
    from radflow.explore.export_pages import EXPORT_ROLES, cohort_exports, projects_of
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
        "runs": _runs(request, name), "flash": _flash(request), "run_token": uuid.uuid4().hex,
        "exports": cohort_exports(request, name), "projects": projects_of(request),
        "may_export": me.has(*EXPORT_ROLES),
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
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Series
    from radflow.cohorts import to_sql
    from radflow.enums import ResultKind
    from radflow.results.current import current_units

    definition, _ = _cohort(request, name)
    with session_scope(_url(request)) as session:
        uids = select(Series.series_uid).where(to_sql(definition.where))
        total = session.exec(select(func.count()).select_from(Series)
                             .where(to_sql(definition.where))).one()
        units = current_units()  # done: the series with a current SEG, a current SR
        done = dict(session.exec(
            select(units.c.kind, func.count(func.distinct(units.c.source_series_uid)))
            .where(units.c.source_series_uid.in_(uids),
                   units.c.kind.in_([ResultKind.SEG.value, ResultKind.SR.value]))
            .group_by(units.c.kind)).all())
    return {"series": total, "seg": int(done.get(ResultKind.SEG, 0)),
            "sr": int(done.get(ResultKind.SR, 0))}


@router.get("/api/cohorts/{name}/runs")
def runs_api(request: Request, name: str, me: User = Depends(explorer)) -> list[dict[str, Any]]:
    _cohort(request, name)
    return _runs(request, name)


@router.post("/cohorts/{name}/runs")
def start_run(request: Request, name: str, csrf: str | None = Form(None),
              review: str | None = Form(None), run_token: str | None = Form(None),
              me: User = Depends(runner)) -> Response:
    """Start segment-and-quantify over the cohort on the site's worker (as `radflow pipeline
    run --cohort NAME [--review]` does), tagged with the cohort and the user. The page's run
    token is the run's idempotency key: the same form sent twice (a double click, a reload)
    starts one run."""
    from radflow.audit import record

    check_csrf(request, csrf)
    _cohort(request, name)
    if not run_token or not RUN_TOKEN.fullmatch(run_token):
        raise HTTPException(400, "the form has no valid run token: reload the cohort's page "
                                 "and start the run from there")
    ctx = _ctx(request)
    parameters = {"cohort": name, "series_uids": None, "model": "radflow-abdomen-demo",
                  "params": "default", "site": ctx.name, "force": False, "max_parallel": 2,
                  "isolation": "inline", "review": bool(review)}
    try:
        started = ctx.prefect().create_flow_run(
            f"segment-and-quantify/{ctx.name}", parameters,
            idempotency_key=f"explore-{name}-{run_token}",
            tags=("radflow", "web", f"cohort:{name}"))
    except RadflowError as exc:
        raise HTTPException(502, f"the run did not start: {exc.message}") from exc
    if not started.created:
        request.session["flash"] = (f"this form already started {started.name} on cohort "
                                    f"{name}: no second run.")
        return RedirectResponse(f"/cohorts/{name}", 303)
    record(_url(request), actor=me.sub, action="pipeline.started",
           subject=f"flow_run:{started.id}", detail={"cohort": name, "review": bool(review),
                                                     "flow": "segment-and-quantify"})
    request.session["flash"] = (f"segment-and-quantify started on cohort {name}"
                                + (" with review" if review else "") + f" ({started.name}).")
    return RedirectResponse(f"/cohorts/{name}", 303)
