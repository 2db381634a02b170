"""The hub web app's Discover page (phase 13): what the fleet holds, from the sites' collection
summaries (each site's table by modality, body part, sex, age band, year..., with its rounding),
a cohort query answered per site and in total, and the access requests: file one for chosen
sites, and see each site's steward's decision."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from radflow.errors import RadflowError
from radflow.hub.home import COORDINATOR_ROLES
from radflow.web.auth import User, check_csrf, requiring

router = APIRouter()
coordinator = requiring(*COORDINATOR_ROLES)
SHOWN = ("modality", "body_part", "manufacturer", "sex", "age_band", "year")


def _page(request: Request, query: str = "", answer: dict[str, Any] | None = None,
          flash: dict[str, Any] | None = None, form: dict[str, Any] | None = None,
          status: int = 200) -> Response:
    from radflow.federation.discovery import rule_text
    from radflow.hub import registry
    from radflow.hub.discovery import requests, summaries
    from radflow.hub.studies import flow_rows
    from radflow.web.app import render

    engine = request.app.state.home.engine()
    found = summaries(engine)
    overview = {dim: sorted({row[0] for s in found.values() for row in s["tables"].get(dim, [])})
                for dim in SHOWN}
    cells = {site: {dim: {row[0]: row[1] for row in s["tables"].get(dim, [])} for dim in SHOWN}
             for site, s in found.items()}
    return render(request, "hub_discover.html", {
        "summaries": found, "overview": overview, "cells": cells, "dims": SHOWN,
        "rules": {site: rule_text(s["rule"]) for site, s in found.items()},
        "query": query, "answer": answer, "requests": requests(engine),
        "flows": flow_rows(engine), "form": form or {},
        "sites": [s.name for s in registry.sites(engine) if s.status == "enrolled"],
        "flash": flash or request.session.pop("flash", None)}, status=status)


@router.get("/discover")
def discover_page(request: Request, where: str = "", me: User = Depends(coordinator)
                  ) -> Response:
    from radflow.hub.discovery import discover
    from radflow.hub.web import parse_cohort, refused

    if not where.strip():
        return _page(request)
    try:
        definition = parse_cohort(where)
        answer = discover(request.app.state.home.engine(),
                          definition["where"] if definition else None)
    except RadflowError as exc:
        return _page(request, where, flash=refused("Not answered", exc), status=422)
    return _page(request, where, answer)


@router.post("/discover/requests")
def file_request(request: Request, csrf: str | None = Form(None), purpose: str = Form(""),
                 flows: list[str] | None = Form(None), sites: list[str] | None = Form(None),
                 cohort: str = Form(""), me: User = Depends(coordinator)) -> Response:
    from radflow.hub.discovery import file_request as file
    from radflow.hub.web import audit, parse_cohort, refused

    check_csrf(request, csrf)
    home = request.app.state.home
    who = f"web:{me.sub}"
    try:
        filed = file(home.engine(), purpose, flows or [], sites or [], parse_cohort(cohort), who)
    except RadflowError as exc:
        return _page(request, flash=refused("Not filed", exc), status=422, form={
            "purpose": purpose, "flows": flows or [], "sites": sites or [], "cohort": cohort})
    audit(home, who, "access.request", {"request": filed["id"], "flows": filed["flows"],
                                        "sites": filed["sites"], "cohort": filed["cohort_hash"]})
    request.session["flash"] = {"text": f"Access request {filed['id']} filed for "
                                        f"{', '.join(filed['sites'])}: each site's steward "
                                        "decides on its Federation page.", "error": False}
    return RedirectResponse("/discover#requests", 303)

