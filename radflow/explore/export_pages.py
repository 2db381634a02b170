"""*Export de-identified…* on a cohort's page: a researcher (or a steward, an admin) files a
de-identified export of the cohort with one of the site's export projects. It waits for a data
steward's approval on the Federation page (site policy ``export_requires_steward``), then runs
on the site's worker; the page shows its state and progress, and offers the zip (kept at the
site, ``export/outbox/``) for download to whoever filed it and to stewards and admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from radflow.errors import RadflowError
from radflow.explore.web import _ctx, _url, explorer
from radflow.web.auth import STEWARD_ROLES, User, check_csrf, requiring

router = APIRouter()
EXPORT_ROLES = ("researcher", "data-steward", "admin")
exporter = requiring(*EXPORT_ROLES)


def cohort_exports(request: Request, cohort: str) -> list[dict[str, Any]]:
    """This cohort's exports, newest first: what the cohort's page shows."""
    from radflow.export import run

    rows = []
    for entry in run.listing(_ctx(request).paths.root):
        if entry["plan"]["cohort"] != cohort:
            continue
        result = entry.get("result") or {}
        rows.append({"id": entry["id"], "project": entry["project"], "state": entry["state"],
                     "requested_by": entry["requested_by"], "target": entry["target"],
                     "progress": entry.get("progress", 0),
                     "total": entry.get("total") or entry["plan"]["instances"],
                     "instances": result.get("instances"),
                     "held_back": len(result.get("held_back") or []),
                     "reason": entry.get("reason") or "",
                     "download": entry["state"] == "done" and entry["target"] == "outbox"})
    return rows[:10]


def projects_of(request: Request) -> list[Any]:
    from radflow.export import projects

    return projects.listing(_ctx(request).paths.root)


@router.post("/cohorts/{name}/exports")
def file_export(request: Request, name: str, csrf: str | None = Form(None),
                project: str = Form(...), me: User = Depends(exporter)) -> Response:
    """File the export (audited); where no steward is needed it starts at once."""
    from radflow.export import run
    from radflow.federation.policy import load_policy

    check_csrf(request, csrf)
    ctx = _ctx(request)
    try:
        entry = run.request(ctx.paths.root, _url(request), project=project, cohort=name,
                            target="outbox", actor=f"web:{me.sub}", origin="web",
                            requires_steward=load_policy(ctx.paths.root).export_requires_steward)
        if entry["state"] == "approved":
            run.start_on_worker(ctx, entry["id"])
    except RadflowError as exc:
        request.session["flash"] = f"No export: {exc.message} ({exc.fix})"
        return RedirectResponse(f"/cohorts/{name}#exports", 303)
    request.session["flash"] = (
        f"Export {entry['id']} filed: it waits for a data steward's approval on the Federation "
        "page, then runs here." if entry["state"] == "waiting"
        else f"Export {entry['id']} started on the site's worker.")
    return RedirectResponse(f"/cohorts/{name}#exports", 303)


@router.get("/api/cohorts/{name}/exports")
def exports_api(request: Request, name: str, me: User = Depends(explorer)) -> list[dict[str, Any]]:
    return cohort_exports(request, name)


@router.get("/exports/{export_id}/download")
def download(request: Request, export_id: str, me: User = Depends(exporter)) -> Response:
    """The zip of a finished export, for whoever filed it, a steward or an admin (audited)."""
    from radflow.audit import record
    from radflow.export import run

    ctx = _ctx(request)
    try:
        entry = run.load(ctx.paths.root, export_id)
    except RadflowError as exc:
        raise HTTPException(404, exc.message) from exc
    if entry["requested_by"] != f"web:{me.sub}" and not me.has(*STEWARD_ROLES):
        raise HTTPException(403, "only whoever filed the export, a data steward or an admin "
                                 "downloads it")
    path = run.outbox_zip(ctx.paths.root, export_id)
    if entry["state"] != "done" or entry["target"] != "outbox" or not path.is_file():
        raise HTTPException(409, f"export {export_id} is {entry['state']}: nothing to download")
    record(_url(request), actor=f"web:{me.sub}", action="export.downloaded",
           subject=f"export:{export_id}", detail={"manifest_sha256":
                                                  entry["result"]["manifest_sha256"]})
    return FileResponse(path, media_type="application/zip",
                        filename=f"radflow-export-{export_id}.zip")
