"""The site's data in the browser: the catalog dashboard (*Explore*), the cohort builder
(*Cohorts*, :mod:`radflow.explore.cohort_pages`), the series browser and the series page with
its viewer (:mod:`radflow.explore.viewer`). This module holds the dashboard, the series lists
and what the pages share.

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

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from radflow.errors import ConfigurationError
from radflow.web.auth import CLINICAL_ROLES, User, requiring

router = APIRouter()
TEMPLATES = Path(__file__).parent / "templates"
EXPLORE_ROLES = ("researcher", "radiologist", "data-steward", "admin")
RUN_ROLES = ("researcher", "radiologist", "admin")
explorer = requiring(*EXPLORE_ROLES)
runner = requiring(*RUN_ROLES)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PAGE = 50


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
    from radflow.explore.facets import DERIVED, chips, definition_of, facet_counts
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
        "switch": _link(state, DERIVED, "1", not counts["derived"]),
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
    from radflow.cohorts import select_series, to_sql
    from radflow.results.current import current_result_ids

    with session_scope(_url(request)) as session:
        if definition is not None and not newest:  # a cohort's page: from the columnar copy
            rows = select_series(session, definition, limit=limit, offset=offset)
        else:
            query = select(Series)
            if definition is not None:
                query = query.where(to_sql(definition.where))
            order = (col(Series.id).desc(),) if newest else (col(Series.study_date),
                                                              col(Series.id))
            rows = list(session.exec(query.order_by(*order).offset(offset).limit(limit)))
        ids = [r.id for r in rows]
        uids = [r.series_uid for r in rows]
        findings: dict[int, list[str]] = {}
        for pk, code in session.exec(select(Finding.series_pk, Finding.code)
                                     .where(col(Finding.series_pk).in_(ids))):
            findings.setdefault(pk, []).append(code)
        results: dict[str, dict[str, int]] = {}  # the current ones (radflow.results.current)
        current = current_result_ids(uids)
        for uid, kind, status, n in session.exec(
                select(DerivedResult.source_series_uid, DerivedResult.kind, DerivedResult.status,
                       func.count()).where(col(DerivedResult.id).in_(current))
                .group_by(DerivedResult.source_series_uid, DerivedResult.kind,
                          DerivedResult.status)):
            key = f"{getattr(kind, 'value', kind)} {getattr(status, 'value', status)}"
            results.setdefault(uid, {})[key] = results.setdefault(uid, {}).get(key, 0) + n
        return [{"uid": r.series_uid, "modality": r.modality, "description": r.series_description,
                 "body_part": r.body_part, "study_date": r.study_date, "instances": r.num_instances,
                 "manufacturer": r.manufacturer, "status": r.status.value,
                 "findings": sorted(set(findings.get(r.id, []))),
                 "results": sorted(results.get(r.series_uid, {}).items())} for r in rows]


def pages() -> Any:
    from radflow.explore.cohort_pages import router as cohort_pages
    from radflow.explore.export_pages import router as export_pages
    from radflow.explore.viewer import router as viewer
    from radflow.web import WebPages

    router.include_router(cohort_pages)
    router.include_router(export_pages)
    router.include_router(viewer)
    return WebPages(router=router, templates=TEMPLATES, nav=(
        ("Explore", "/explore", EXPLORE_ROLES), ("Cohorts", "/cohorts", EXPLORE_ROLES)))
