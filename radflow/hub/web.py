"""The coordinators' web app on the hub: log in with OpenID Connect (roles ``coordinator`` and
``admin``; the same machinery as a site's worklist, :mod:`radflow.web.app`), see the studies,
start one, watch it and read its result; see the sites and the published flow versions. An
admin may revoke a site.

    python -m radflow.hub.web --home RADFLOW_HOME     # started by `radflow hub up`

Everything a page does goes through the same functions as the CLI and the API
(:mod:`radflow.hub.studies`, :mod:`radflow.hub.registry`), and each study records who started
it (``web:<subject>``). Log-ins, started studies and revocations go to ``hub/audit.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from radflow.errors import RadflowError
from radflow.hub.home import COORDINATOR_ROLES, HubHome
from radflow.hub.models import HubWebSession
from radflow.hub.web_discover import router as discover_router
from radflow.web import WebPages
from radflow.web.auth import User, check_csrf, requiring
from radflow.web.host import WebHost
from radflow.web.sessions import SessionStore

TEMPLATES = Path(__file__).parent / "templates"
coordinator = requiring(*COORDINATOR_ROLES)
admin = requiring("admin")
router = APIRouter()
router.include_router(discover_router)  # the Discover page (radflow.hub.web_discover)
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def audit(home: HubHome, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Append one event to ``hub/audit.jsonl`` (0600)."""
    path = home.root / "audit.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "actor": actor, "action": action, "detail": detail}) + "\n")


def hub_pages() -> WebPages:
    return WebPages(router=router, templates=TEMPLATES, nav=(
        ("Studies", "/studies", COORDINATOR_ROLES),
        ("Schedules", "/schedules", COORDINATOR_ROLES),
        ("Discover", "/discover", COORDINATOR_ROLES),
        ("Sites", "/sites", COORDINATOR_ROLES),
        ("Flows", "/flows", COORDINATOR_ROLES)))


def hub_host(home: HubHome) -> WebHost:
    oidc = home.oidc()
    secrets = home.secrets()
    return WebHost(
        name="hub", cookie="radflow_hub", url=home.web_url(), issuer=home.issuer(),
        client_id=oidc["client_id"], client_secret=secrets["oidc_client_secret"],
        sessions=SessionStore(home.engine, HubWebSession),
        session_hours=float(oidc["session_hours"]), roles_claim=oidc["roles_claim"],
        roles=COORDINATOR_ROLES, pages=(hub_pages(),),
        audit=lambda actor, action, detail: audit(home, actor, action, detail),
        state={"home": home},
        no_role_hint="Ask the hub's admin for the role coordinator.")


def _home(request: Request) -> HubHome:
    return request.app.state.home


def _flash(request: Request, text: str, error: bool = False) -> None:
    request.session["flash"] = {"text": text, "error": error}


@router.get("/studies")
def studies_page(request: Request, me: User = Depends(coordinator)) -> Response:
    from radflow.hub.studies import study_rows
    from radflow.web.app import render

    return render(request, "hub_studies.html", {
        "rows": study_rows(_home(request)), "flash": request.session.pop("flash", None)})


def _form_context(home: HubHome) -> dict[str, Any]:
    """The form's flows and sites, and which site can run which flow (from the fleet)."""
    from radflow.hub import registry
    from radflow.hub.fleet import fleet, latest_reports, readiness
    from radflow.hub.studies import flow_rows

    engine = home.engine()
    flows = flow_rows(engine)
    sites = [s for s in registry.sites(engine) if s.status == "enrolled"]
    known = (latest_reports(engine), fleet(engine)) if sites else None
    ready = {f["name"]: {r["site"]: r for r in readiness(engine, f["name"], known=known)[
        "sites"]} for f in flows} if sites else {}
    return {"flows": flows, "sites": sites, "ready": ready}


@router.get("/studies/new")
def new_study_page(request: Request, me: User = Depends(coordinator)) -> Response:
    from radflow.web.app import render

    return render(request, "hub_study_new.html", {
        **_form_context(_home(request)), "flash": request.session.pop("flash", None),
        "form": {"cohort": "modality=CT", "deadline": "600"}})


def parse_cohort(text: str) -> dict[str, Any] | None:
    """A cohort from the form: a JSON definition (as `radflow cohort save` writes it) or one
    filter per line in the short form (``modality=CT``); empty: every series.

    Raises:
        RadflowError: neither parses (the message names the bad part).
    """
    from radflow.cohorts.definition import CohortDefinition, parse_short

    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        return CohortDefinition.parse(text).canonical()
    return parse_short([line.strip() for line in text.splitlines() if line.strip()]).canonical()


def form_params(cohort: str, parameters: str, deadline: float) -> dict[str, Any]:
    """A study's parameters from a form: the JSON object of its other parameters and the
    cohort (:func:`parse_cohort`), with the deadline checked.

    Raises:
        HTTPException: a deadline outside 1 s to 7 days.
        ValueError: parameters that are no JSON object.
        RadflowError: a cohort that does not parse.
    """
    if not 0 < deadline <= 7 * 24 * 3600:
        raise HTTPException(422, "the deadline is between 1 s and 7 days")
    params: dict[str, Any] = json.loads(parameters) if parameters.strip() else {}
    if not isinstance(params, dict):
        raise ValueError("the parameters are a JSON object, e.g. {\"bins\": 32}")
    definition = parse_cohort(cohort)
    if definition is not None:
        params["cohort"] = definition
    return params


def refused(what: str, exc: Exception) -> dict[str, Any]:
    """The flash of a refused form: what was not done, the reason and its fix."""
    message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
    fix = getattr(exc, "fix", None)
    return {"text": f"{what}: {message}" + (f" ({fix})" if fix else ""), "error": True}


@router.post("/studies")
def start_study(request: Request, csrf: str | None = Form(None), flow: str = Form(...),
                cohort: str = Form(""), deadline: float = Form(600.0),
                parameters: str = Form(""),
                sites: list[str] | None = Form(None), skip_unable: bool = Form(False),
                me: User = Depends(coordinator)) -> Response:
    from radflow.hub.studies import launch
    from radflow.web.app import render

    check_csrf(request, csrf)
    home = _home(request)
    try:
        params = form_params(cohort, parameters, deadline)
        started = launch(home, flow, params, sites or None, deadline, f"web:{me.sub}",
                         skip_unable=skip_unable)
    except (RadflowError, ValueError, HTTPException) as exc:
        return render(request, "hub_study_new.html", {
            **_form_context(home), "flash": refused("Not started", exc),
            "form": {"cohort": cohort, "deadline": f"{deadline:g}", "flow": flow,
                     "sites": sites or [], "parameters": parameters,
                     "skip_unable": skip_unable}}, status=422)
    left_out = [row["site"] for row in started["left_out"]]
    audit(home, f"web:{me.sub}", "study.started", {"study": started["study"], "flow": flow,
                                                   "sites": sites or "all",
                                                   **({"left_out": left_out} if left_out else {})})
    _flash(request, f"Study {started['study']} started."
           + (f" Left out (versions below the flow's need): {', '.join(left_out)}."
              if left_out else ""))
    return RedirectResponse(f"/studies/{started['study']}", 303)


def _state(request: Request, study_id: str) -> dict[str, Any]:
    from radflow.hub.studies import study_state

    found = study_state(_home(request), study_id) if study_id.isalnum() else None
    if found is None:
        raise HTTPException(404, f"there is no study {study_id!r} on this hub")
    return found


@router.get("/studies/{study_id}")
def study_page(request: Request, study_id: str, me: User = Depends(coordinator)) -> Response:
    from radflow.web.app import render

    found = _state(request, study_id)
    home = _home(request)
    run_url = None
    try:
        api = home.prefect(timeout=3)
        runs = api.flow_runs_tagged(f"study:{study_id}")
        run_url = api.flow_run_ui(runs[0].id) if runs else None
    except (RadflowError, OSError, AttributeError):
        run_url = None
    from radflow.hub.study_view import release_schema, study_view

    folder = home.root / "studies" / study_id
    charts = [Path(a).name for a in found.get("artifacts", []) if a.endswith(".png")
              and (folder / Path(a).name).is_file()] if found["state"] == "finished" else []
    return render(request, "hub_study.html", {
        "study": found, "s": found, "run_url": run_url,
        "view": study_view(found, release_schema(home.engine(), found.get("version"))),
        "figures": [(name, f"/studies/{study_id}/files/{name}") for name in charts],
        "report": found["state"] == "finished" and (folder / "report.html").exists(),
        "flash": request.session.pop("flash", None)})


@router.get("/studies/{study_id}/files/{name}")
def study_file(request: Request, study_id: str, name: str,
               me: User = Depends(coordinator)) -> Response:
    """A study artifact: a chart (PNG) or the report (HTML, to read or download)."""
    _state(request, study_id)
    folder = _home(request).root / "studies" / study_id
    media = {".png": "image/png", ".html": "text/html; charset=utf-8"}.get(Path(name).suffix)
    path = folder / name
    if media is None or "/" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(404, "this study has no such file (yet)")
    # the report is a document of its own (its style inline, its charts inside): no script
    return FileResponse(path, media_type=media, headers={"Content-Security-Policy": REPORT_CSP})


def _schedules_page(request: Request, form: dict[str, Any] | None = None,
                    flash: dict[str, Any] | None = None, status: int = 200) -> Response:
    from radflow.hub.schedules import rows
    from radflow.hub.studies import flow_rows
    from radflow.web.app import render

    home = _home(request)
    return render(request, "hub_schedules.html", {
        "rows": rows(home), "flows": flow_rows(home.engine()),
        "flash": flash or request.session.pop("flash", None),
        "form": form or {"cohort": "modality=CT", "cron": "0 2 * * 1", "timezone": "UTC",
                         "deadline": "600"}}, status=status)


@router.get("/schedules")
def schedules_page(request: Request, me: User = Depends(coordinator)) -> Response:
    """The scheduled studies: when each runs, whether it is paused, its last studies."""
    return _schedules_page(request)


@router.post("/schedules")
def add_schedule(request: Request, csrf: str | None = Form(None), flow: str = Form(...),
                 cron: str = Form(""), timezone: str = Form("UTC"), cohort: str = Form(""),
                 parameters: str = Form(""), deadline: float = Form(600.0),
                 me: User = Depends(coordinator)) -> Response:
    from radflow.hub.schedules import create

    check_csrf(request, csrf)
    home = _home(request)
    try:
        params = form_params(cohort, parameters, deadline)
        made = create(home, flow, cron.strip(), params, None, deadline, f"web:{me.sub}",
                      timezone=timezone.strip() or "UTC")
    except (RadflowError, ValueError, HTTPException) as exc:
        return _schedules_page(request, {"flow": flow, "cron": cron, "timezone": timezone,
                                         "cohort": cohort, "parameters": parameters,
                                         "deadline": f"{deadline:g}"},
                               refused("Not scheduled", exc), status=422)
    audit(home, f"web:{me.sub}", "schedule.created", {"schedule": made["slug"], "flow": flow,
                                                      "cron": made["cron"]})
    _flash(request, f"Schedule {made['slug']} made: {flow} at {made['cron']} "
                    f"({made['timezone']}).")
    return RedirectResponse("/schedules", 303)


@router.post("/schedules/{slug}/{action}")
def change_schedule(request: Request, slug: str, action: str, csrf: str | None = Form(None),
                    me: User = Depends(coordinator)) -> Response:
    from radflow.hub.schedules import delete, set_active

    check_csrf(request, csrf)
    if action not in ("pause", "resume", "delete"):
        raise HTTPException(404, "pause, resume or delete")
    home = _home(request)
    try:
        if action == "delete":
            delete(home, slug)
        else:
            set_active(home, slug, action == "resume")
    except RadflowError as exc:
        raise HTTPException(404, exc.message) from exc
    audit(home, f"web:{me.sub}", {"pause": "schedule.paused", "resume": "schedule.resumed",
                                  "delete": "schedule.deleted"}[action], {"schedule": slug})
    _flash(request, f"Schedule {slug} " + {"pause": "paused: no run starts until it is "
                                           "resumed.", "resume": "resumed.",
                                           "delete": "deleted (its studies stay)."}[action])
    return RedirectResponse("/schedules", 303)


@router.get("/sites")
def sites_page(request: Request, me: User = Depends(coordinator)) -> Response:
    from radflow.hub import registry
    from radflow.hub.fleet import fleet
    from radflow.web.app import render

    engine = _home(request).engine()
    return render(request, "hub_sites.html", {
        "sites": registry.sites(engine), "fleet": {r["site"]: r for r in fleet(engine)},
        "flash": request.session.pop("flash", None)})


@router.post("/sites/{name}/revoke")
def revoke(request: Request, name: str, csrf: str | None = Form(None),
           me: User = Depends(admin)) -> Response:
    from radflow.hub import registry

    check_csrf(request, csrf)
    home = _home(request)
    if name not in {s.name for s in registry.sites(home.engine())}:
        raise HTTPException(404, f"there is no site {name!r}")
    registry.revoke_site(home.engine(), name)
    audit(home, f"web:{me.sub}", "site.revoked", {"site": name})
    _flash(request, f"Site {name} is revoked: its token no longer works, and it cannot get a "
                    "new one. Enrol it again with radflow hub site add.")
    return RedirectResponse("/sites", 303)


@router.get("/flows")
def flows_page(request: Request, me: User = Depends(coordinator)) -> Response:
    from radflow.hub import registry
    from radflow.web.app import render

    return render(request, "hub_flows.html", {
        "versions": list(reversed(registry.versions(_home(request).engine())))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.hub.web")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from radflow.web.app import create_web_app

    home = HubHome.of(args.home)
    app = create_web_app(hub_host(home), tls=bool(args.certfile and args.keyfile))
    # no access log: the log-in callback's query holds the authorization code
    uvicorn.run(app, host=args.bind, port=home.config()["web_port"], access_log=False,
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
