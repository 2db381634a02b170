"""The site web app's Federation page, for data stewards (and admins): the jobs the hub queued
(accept them, in job mode manual), the releases waiting for approval (exactly the JSON that would
leave, approved by its hash, or declined), the site's policy and its approved versions. The same
decisions as `radflow site jobs|releases`, through :mod:`radflow.federation.steward`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from radflow.errors import RadflowError
from radflow.federation.steward import HASH
from radflow.federation.tables import params_rows, release_tables, round_schema
from radflow.web.auth import STEWARD_ROLES, User, check_csrf, steward

router = APIRouter()
TEMPLATES = Path(__file__).parent / "templates"


def _jobs(ctx: Any, approved: set[str]) -> tuple[list[dict[str, Any]], str | None]:
    from radflow.federation.client import HubClient
    from radflow.federation.offline import is_offline
    from radflow.federation.steward import is_accepted, undecided

    if not (ctx.paths.root / "federation" / "hub.json").exists():
        return [], "This site has not joined a hub (radflow site join HUB_URL --code CODE)."
    if is_offline(ctx.paths.root):
        return [], ("This site is never online: its jobs come as files (radflow site job "
                    "import FILE --out RELEASE).")
    try:
        answer = HubClient(ctx.paths.root).get("/jobs", wait=0)
    except RadflowError as exc:
        return [], f"The hub cannot be asked for jobs now: {exc.message}"
    except OSError as exc:
        return [], f"The hub cannot be reached now ({type(exc).__name__})."
    if answer.status_code != 200:
        return [], f"The hub answered HTTP {answer.status_code} (is this site revoked?)."
    return [{"id": j["id"], "study": j["study"], "version": j["version"],
             "approved": j["version"] in approved,
             "accepted": is_accepted(ctx.catalog_url, j["id"]),
             "release_waiting": undecided(ctx.catalog_url, j["id"]),
             "values": j["params"], "params": params_rows(j["params"]),
             "raw": json.dumps(j["params"], indent=2, sort_keys=True)}
            for j in answer.json().get("jobs", [])], None


def _schema(root: Path, version: str | None) -> Any:
    """The release schema in the version's installed bundle (its fields' descriptions and
    axes); None where it is not installed here or does not read."""
    import yaml

    from radflow.federation.bundle import PACKAGE_FILE
    from radflow.federation.release import ReleaseSchema

    path = root / "bundles" / (version or "").removeprefix("sha256:") / PACKAGE_FILE
    try:
        return ReleaseSchema.model_validate(yaml.safe_load(path.read_text())["release_schema"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


@router.get("/federation")
def federation_page(request: Request, me: User = Depends(steward)) -> Response:
    from radflow.federation.policy import load_policy
    from radflow.federation.steward import pending_releases
    from radflow.web.app import render

    ctx = request.app.state.ctx
    policy = load_policy(ctx.paths.root)
    jobs, problem = _jobs(ctx, set(policy.approved))
    params = {j["id"]: j["values"] for j in jobs}  # (a job's parameters name the axes)
    releases = [{**r, "text": json.dumps(r["release"], indent=2, sort_keys=True),
                 "tables": release_tables(r["release"], params.get(r["job"]), round_schema(
                     _schema(ctx.paths.root, r["version"]), r["release"],
                     (params.get(r["job"]) or {}).get("round")))}
                for r in pending_releases(ctx.catalog_url)]
    return render(request, "federation.html", {
        "jobs": jobs, "problem": problem, "releases": releases, "policy": policy,
        "access": _access(ctx, problem is None), "exports": _exports(ctx),
        "flash": request.session.pop("flash", None)})


def _exports(ctx: Any) -> list[dict[str, Any]]:
    """The de-identified exports: those waiting for a steward first, then the ten newest."""
    from radflow.export import run

    entries = run.listing(ctx.paths.root)
    waiting = [e for e in entries if e["state"] == "waiting"]
    return waiting + [e for e in entries if e["state"] != "waiting"][:10]


@router.post("/federation/exports/{export_id}")
def decide_export(request: Request, export_id: str, csrf: str | None = Form(None),
                  decision: str = Form(...), reason: str = Form(""),
                  me: User = Depends(steward)) -> Response:
    from radflow.export import run

    ctx = _decision(request, csrf, decision)
    try:
        entry = run.decide(ctx.paths.root, ctx.catalog_url, export_id,
                           approve=decision == "approve", actor=f"web:{me.sub}",
                           reason=reason[:2000])
        on_worker = entry["state"] == "approved" and entry.get("origin") == "web"
        if on_worker:  # filed on the cohort's page: it runs here, the zip is offered there
            run.start_on_worker(ctx, export_id)
    except RadflowError as exc:
        request.session["flash"] = f"Export {export_id}: not decided: {exc.message} ({exc.fix})"
        return RedirectResponse("/federation#exports", 303)
    then = ""
    if decision == "approve":
        then = (" It runs on the site's worker now." if on_worker else
                f" It runs with `radflow export run {entry['project']} --request {export_id}`.")
    request.session["flash"] = f"Export {export_id}: {decision}d (in the audit log).{then}"
    return RedirectResponse("/federation#exports", 303)


def _decision(request: Request, csrf: str | None, decision: str) -> Any:
    """The site of a decision form, once its CSRF token and its decision are checked."""
    check_csrf(request, csrf)
    if decision not in ("approve", "decline"):
        raise HTTPException(422, f"unknown decision {decision!r}: approve or decline")
    return request.app.state.ctx


def _access(ctx: Any, hub_answers: bool) -> list[dict[str, Any]]:
    """The access requests naming this site (fetched again while the hub answers), with this
    site's decisions (radflow.federation.access)."""
    from radflow.federation import access
    from radflow.federation.client import HubClient

    if hub_answers:
        try:
            access.refresh(ctx.paths.root, HubClient(ctx.paths.root))
        except (RadflowError, OSError):
            pass  # the requests fetched last are shown
    return access.listing(ctx.paths.root, ctx.catalog_url)


@router.post("/federation/access/{request_id}")
def decide_access(request: Request, request_id: str, csrf: str | None = Form(None),
                  decision: str = Form(...), reason: str = Form(""),
                  me: User = Depends(steward)) -> Response:
    from radflow.federation import access

    ctx = _decision(request, csrf, decision)
    try:
        done = access.decide(ctx.paths.root, ctx.catalog_url, request_id,
                             decision == "approve", f"web:{me.sub}", reason[:2000])
    except RadflowError as exc:
        request.session["flash"] = f"Access request {request_id}: not decided: {exc.message} " \
                                   f"({exc.fix})"
        return RedirectResponse("/federation#access", 303)
    request.session["flash"] = (f"Access request {request_id}: {done['decision']} (in the "
                                "audit log); the agent tells the hub.")
    return RedirectResponse("/federation#access", 303)


@router.post("/federation/jobs/{job_id}/accept")
def accept(request: Request, job_id: str, csrf: str | None = Form(None),
           me: User = Depends(steward)) -> Response:
    from radflow.federation.steward import accept_job

    check_csrf(request, csrf)
    ctx = request.app.state.ctx
    try:
        accept_job(ctx.catalog_url, job_id, f"web:{me.sub}")
    except RadflowError as exc:
        raise HTTPException(422, exc.message) from exc
    request.session["flash"] = f"Job {job_id[:8]}: accepted; the agent runs it on its next poll."
    return RedirectResponse("/federation", 303)


@router.post("/federation/releases/{job_id}")
def decide(request: Request, job_id: str, csrf: str | None = Form(None),
           decision: str = Form(...), hash: str = Form(""),
           me: User = Depends(steward)) -> Response:
    from radflow.federation.steward import decide_release

    check_csrf(request, csrf)
    if decision not in ("approve", "decline"):
        raise HTTPException(422, f"unknown decision {decision!r}: approve or decline")
    if decision == "approve" and not HASH.fullmatch(hash):
        raise HTTPException(422, "an approval names the release's hash (sha256:<64 hex>): "
                                 "approve from the Federation page")
    ctx = request.app.state.ctx
    try:
        decide_release(ctx.catalog_url, job_id, f"web:{me.sub}",
                       approve=decision == "approve", expected_hash=hash or None)
    except RadflowError as exc:
        raise HTTPException(409, exc.message) from exc
    request.session["flash"] = (f"Release of job {job_id[:8]}: "
                                f"{'approved' if decision == 'approve' else 'declined'}; "
                                "the agent posts it to the hub.")
    return RedirectResponse("/federation", 303)


def pages() -> Any:
    from radflow.web import WebPages

    return WebPages(router=router, templates=TEMPLATES,
                    nav=(("Federation", "/federation", STEWARD_ROLES),))
