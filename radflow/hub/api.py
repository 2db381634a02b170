"""The federation API (FastAPI): enrolment, the token endpoint, and the routes sites call with
their bearer token. Every ``/v1/sites/{name}/...`` route needs a valid, unexpired token of
that very site: 401 without one, 403 with another site's.

Coordinators call ``/v1/studies`` and ``/v1/flows`` with a personal API token
(``radflow hub token create``); a site's token is no coordinator's, and the other way round.
The API's schema (``/openapi.json``) answers either token, nothing else.

Nothing a site posts is trusted: a request body over ``max_body_bytes`` (1 MiB unless the
hub's ``hub.json`` or ``RADFLOW_HUB_MAX_BODY_BYTES`` says otherwise) is refused with 413, but
for a site's post of its own job's result, bound by ``max_release_bytes`` instead (16 MiB, or
``hub.json``'s or ``RADFLOW_HUB_MAX_RELEASE_BYTES``: a release with model weights, fp16 in
base64, weighs 2.7 bytes per parameter; a masked uint32 update 5.4), and
a release that does not match its version's release schema makes the job ``invalid_release``
(:mod:`radflow.hub.inbox`), answered 422 with the reason. A site's access token lives 5 minutes
unless ``token_seconds`` in ``hub.json`` or ``RADFLOW_HUB_TOKEN_SECONDS`` says otherwise.

    app = create_app(engine, hub_key_path, public_url="http://127.0.0.1:8700", home=hub_home)
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from radflow.errors import ConfigurationError
from radflow.federation.policy import Setting
from radflow.hub import inbox, registry, study_jobs
from radflow.hub.alerts import Contact
from radflow.hub.discovery_api import add_routes
from radflow.hub.fleet import SiteReport
from radflow.hub.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RELEASE_BYTES, BodyLimit
from radflow.hub.polling import JobWatch
from radflow.hub.registry import ASSERTION_TYPE, Refusal

MAX_WAIT = 25.0  # seconds a long poll is held open, at most
RESULT_PATH = re.compile(r"^/v1/sites/([^/]+)/jobs/([^/]+)/result$")


class Enrolment(BaseModel):
    site: str = Field(max_length=24)
    code: str = Field(max_length=64)
    public_key_pem: str = Field(max_length=2000)


class StudyRequest(BaseModel):
    name: str = Field(max_length=80, pattern=r"^[a-z0-9][a-z0-9-]*$")
    params: dict[str, Any] = Field(default_factory=dict)
    sites: list[str] | None = Field(default=None, max_length=500)
    deadline_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    skip_unable: bool = Field(default=False, description="leave out the chosen sites whose "
                              "versions are below the flow's need (else: refused, 422)")


class ScheduleRequest(BaseModel):
    name: str = Field(max_length=80, pattern=r"^[a-z0-9][a-z0-9-]*$")
    cron: str | None = Field(default=None, max_length=100)
    every: float | None = Field(default=None, description="seconds between runs")
    timezone: str = Field(default="UTC", max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    sites: list[str] | None = Field(default=None, max_length=500)
    deadline_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)


class ScheduleChange(BaseModel):
    active: bool


class JobResult(BaseModel):
    release: dict[str, Any] | None = None
    refusal: str | None = Field(default=None, pattern=r"^[a-z_]+(:[\w.@-]+)?$", max_length=120)
    policy: dict[str, Setting] | None = Field(default=None, max_length=12)


def max_body_bytes(home: Any = None) -> int:
    """The request body bound: ``max_body_bytes`` in the hub's ``hub.json``, else the
    environment's ``RADFLOW_HUB_MAX_BODY_BYTES``, else 1 MiB.

    Raises:
        ConfigurationError: the setting is not a number.
    """
    return _bytes_setting(home, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)


def max_release_bytes(home: Any = None) -> int:
    """The bound on a site's post of its own job's result: ``max_release_bytes`` in the hub's
    ``hub.json``, else ``RADFLOW_HUB_MAX_RELEASE_BYTES``, else 16 MiB.

    Raises:
        ConfigurationError: the setting is not a number.
    """
    return _bytes_setting(home, "max_release_bytes", DEFAULT_MAX_RELEASE_BYTES)


def _bytes_setting(home: Any, key: str, default: int) -> int:
    configured = home.config().get(key) if home is not None else None
    value = configured or os.environ.get(f"RADFLOW_HUB_{key.upper()}") or default
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} {value!r} is not a number of bytes",
                                 fix="set it to an integer, e.g. 1048576 (1 MiB)") from None


def create_app(engine: Engine, hub_key_path: Path, public_url: str,
               home: Any = None, max_body: int | None = None,
               max_release: int | None = None) -> FastAPI:
    """The API; ``home`` (the hub's folder) lets coordinators start studies on the hub's
    Prefect (without it those routes answer 503). ``max_body``: the request body bound in
    bytes (default: :func:`max_body_bytes`); ``max_release``: the bound of a site's own result
    post (default: :func:`max_release_bytes`, never under ``max_body``)."""
    from radflow.federation.signing import fingerprint

    hub_public = hub_key_path.with_suffix(hub_key_path.suffix + ".pub").read_bytes()
    token_url = f"{public_url.rstrip('/')}/oauth/token"
    app = FastAPI(title="radflow hub: federation API", docs_url=None, redoc_url=None,
                  openapi_url=None)
    registry.create(engine)
    watch = JobWatch(engine)
    contact = Contact(engine, home)  # a site heard: last_heard, and a Prefect event
    limit = max_body or max_body_bytes(home)
    token_life = registry.token_lifetime(home)

    release_limit = max(limit, max_release or max_release_bytes(home))

    def own_result(scope: dict[str, Any]) -> tuple[str, str] | None:
        """(site, job) of a site's post of its own result, by its valid token; else None."""
        found = RESULT_PATH.match(scope.get("path", ""))
        if found is None or scope.get("method") != "POST":
            return None
        token = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return (found[1], found[2]) if registry.site_of(engine, token) == found[1] else None

    def bound(scope: dict[str, Any]) -> int:
        """The larger bound only for a site's own result: nobody else may send that much."""
        return release_limit if own_result(scope) else limit

    def oversized(scope: dict[str, Any]) -> None:
        """An authenticated site's oversized release: its job's invalid_release."""
        found = own_result(scope)
        if found is not None:
            inbox.mark_invalid(engine, *found, f"body_too_large (over {release_limit} bytes)")

    app.add_middleware(BodyLimit, max_bytes=limit, on_oversize=oversized, bound=bound)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming where and what, never echoing what was sent (it may be anything)."""
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                         "type": e.get("type", "")} for e in exc.errors()[:20]]},
                            422)

    @app.exception_handler(Refusal)
    async def _refused(_request: Request, exc: Refusal) -> JSONResponse:
        status = {"invalid_client": 401, "unknown_job": 404, "conflict": 409,
                  "invalid_release": 422}.get(exc.code, 400)
        return JSONResponse({"error": exc.code} | ({"reason": exc.message}
                                                   if exc.code == "invalid_release" else {}),
                            status)

    def caller(name: str, request: Request) -> str:
        site = registry.site_of(engine, request.headers.get("authorization"))
        if site is None:
            raise HTTPException(401, "a valid bearer token is needed",
                                headers={"WWW-Authenticate": "Bearer"})
        if site != name:
            raise HTTPException(403, "this token belongs to another site")
        return site

    def coordinator(request: Request) -> str:
        who = registry.api_caller(engine, request.headers.get("authorization"))
        if who is None:
            raise HTTPException(401, "a valid coordinator API token is needed "
                                     "(radflow hub token create)",
                                headers={"WWW-Authenticate": "Bearer"})
        return f"token:{who[0]}"

    def hub_home() -> Any:
        if home is None:
            raise HTTPException(503, "this hub runs no Prefect server: start it with "
                                     "radflow hub up")
        return home

    @app.get("/v1/flows")
    def flows(who: str = Depends(coordinator)) -> list[dict[str, Any]]:
        """The newest version of each published flow, with its parameter schema."""
        from radflow.hub.studies import flow_rows

        return flow_rows(engine)

    @app.get("/v1/flows/{name}/readiness")
    def flow_readiness(name: str, sites: list[str] | None = Query(None, max_length=500),
                       who: str = Depends(coordinator)) -> dict[str, Any]:
        """Which sites can run the newest version of flow NAME, from their fleet reports, and
        why the others cannot (``radflow study check``)."""
        from radflow.errors import RadflowError
        from radflow.hub.fleet import readiness
        from radflow.hub.study_jobs import check_study

        try:
            chosen = check_study(engine, name, sites)
            return readiness(engine, name, chosen)
        except RadflowError as exc:
            raise HTTPException(422, f"{exc.message} ({exc.fix})") from exc

    @app.get("/v1/studies")
    def studies(who: str = Depends(coordinator)) -> list[dict[str, Any]]:
        from radflow.hub.studies import study_rows

        return study_rows(hub_home())

    @app.post("/v1/studies")
    def start(body: StudyRequest, who: str = Depends(coordinator)) -> dict[str, Any]:
        """Start a study (a flow run on the hub's Prefect); poll GET /v1/studies/{id}."""
        from radflow.errors import RadflowError
        from radflow.hub.studies import launch

        try:
            return launch(hub_home(), body.name, body.params, body.sites, body.deadline_s, who,
                          skip_unable=body.skip_unable)
        except RadflowError as exc:
            raise HTTPException(422, f"{exc.message} ({exc.fix})" if exc.fix else exc.message) \
                from exc

    @app.get("/v1/schedules")
    def schedules(who: str = Depends(coordinator)) -> list[dict[str, Any]]:
        """The scheduled studies: each schedule, its next run and its last studies."""
        from radflow.hub.schedules import rows

        return rows(hub_home())

    @app.post("/v1/schedules")
    def schedule(body: ScheduleRequest, who: str = Depends(coordinator)) -> dict[str, Any]:
        """Schedule a study (a schedule of the hub's deployment federated-study/NAME)."""
        from radflow.errors import RadflowError
        from radflow.hub.schedules import create

        try:
            return create(hub_home(), body.name, body.cron, body.params, body.sites,
                          body.deadline_s, who, every=body.every, timezone=body.timezone)
        except RadflowError as exc:
            raise HTTPException(422, f"{exc.message} ({exc.fix})") from exc

    @app.patch("/v1/schedules/{slug}")
    def change_schedule(slug: str, body: ScheduleChange,
                        who: str = Depends(coordinator)) -> dict[str, Any]:
        """Pause (active false) or resume a schedule."""
        from radflow.errors import RadflowError
        from radflow.hub.schedules import set_active

        try:
            return set_active(hub_home(), slug, body.active)
        except RadflowError as exc:
            raise HTTPException(404, exc.message) from exc

    @app.delete("/v1/schedules/{slug}")
    def delete_schedule(slug: str, who: str = Depends(coordinator)) -> dict[str, Any]:
        from radflow.errors import RadflowError
        from radflow.hub.schedules import delete

        try:
            return delete(hub_home(), slug)
        except RadflowError as exc:
            raise HTTPException(404, exc.message) from exc

    @app.get("/v1/studies/{study_id}")
    def study(study_id: str, who: str = Depends(coordinator)) -> dict[str, Any]:
        from radflow.hub.studies import study_state

        found = study_state(hub_home(), study_id)
        if found is None:
            raise HTTPException(404, "no such study")
        return found

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> dict[str, Any]:
        """The API's schema, for a valid site or coordinator token only."""
        token = request.headers.get("authorization")
        if registry.site_of(engine, token) is None and registry.api_caller(engine, token) is None:
            raise HTTPException(401, "a valid site or coordinator token is needed",
                                headers={"WWW-Authenticate": "Bearer"})
        return app.openapi()

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/v1/hub-key")
    def hub_key() -> dict[str, str]:
        """The hub's signing key: sites pin it at enrolment (compare the fingerprint)."""
        return {"public_key_pem": hub_public.decode(), "fingerprint": fingerprint(hub_public),
                "token_url": token_url}

    @app.post("/v1/enrol")
    def enrol(body: Enrolment) -> dict[str, str]:
        row = registry.enrol(engine, body.site, body.code, body.public_key_pem)
        return {"site": row.name, "site_fingerprint": row.fingerprint,
                "hub_key_pem": hub_public.decode(), "hub_fingerprint": fingerprint(hub_public),
                "token_url": token_url}

    @app.post("/oauth/token")
    def token(grant_type: str = Form(...), client_assertion_type: str = Form(""),
              client_assertion: str = Form("")) -> dict[str, Any]:
        if grant_type != "client_credentials":
            raise HTTPException(400, "unsupported_grant_type")
        if client_assertion_type != ASSERTION_TYPE or not client_assertion:
            raise Refusal("invalid_client", "private_key_jwt is the only client authentication")
        access, site, ttl = registry.issue_token(engine, client_assertion, token_url,
                                                 token_life)
        return {"access_token": access, "token_type": "Bearer", "expires_in": ttl,
                "scope": f"site:{site}"}

    @app.get("/v1/sites/{name}/jobs")
    async def jobs(name: str, request: Request,
                   wait: float = Query(0.0, ge=0, le=MAX_WAIT, allow_inf_nan=False,
                                       description=f"seconds, 0 to {MAX_WAIT:g}"),
                   skip: str = "") -> dict[str, Any]:
        """The site's open jobs; with ``wait`` the request is held open (long poll) until one
        is queued or ``wait`` seconds pass (a finite number, at most MAX_WAIT: anything else
        is answered 422). ``skip``: job ids (comma-separated) the site knows already and waits
        on (e.g. for a steward's acceptance): they do not end the wait. The database is asked
        in worker threads, never on the event loop."""
        site = await asyncio.to_thread(caller, name, request)
        await asyncio.to_thread(contact, site)  # heard: the fleet, and the silence alert
        known = set(skip.split(",")[:200]) if skip else set()
        return {"jobs": await watch.wait(name, known, wait)}

    @app.post("/v1/sites/{name}/jobs/{job_id}/result")
    def result(job_id: str, body: JobResult, site: str = Depends(caller)) -> dict[str, str]:
        """A site's release (already through its egress gate) or refusal code, posted once."""
        if (body.release is None) == (body.refusal is None):
            raise HTTPException(422, "post a release or a refusal code")
        return {"job": job_id, "status": study_jobs.post_result(engine, site, job_id,
                                                                body.release, body.refusal,
                                                                body.policy)}

    @app.get("/v1/sites/{name}/versions")
    def versions(site: str = Depends(caller)) -> list[dict[str, Any]]:
        """Every published version: the signed manifest (the site verifies it itself)."""
        import json

        return [{"hash": v.hash, "published_at": v.published_at.isoformat(),
                 "signed": json.loads(v.signed)} for v in registry.versions(engine)]

    @app.get("/v1/sites/{name}/versions/{version_hash}/bundle")
    def bundle(version_hash: str, site: str = Depends(caller)) -> Response:
        from sqlmodel import Session

        from radflow.hub.models import HubVersion

        with Session(engine) as session:
            row = session.get(HubVersion, version_hash)
        if row is None:
            raise HTTPException(404, "no such version")
        return Response(row.bundle, media_type="application/x-tar")

    models_dir = home.root / "models" if home is not None else hub_key_path.parent / "models"

    @app.get("/v1/sites/{name}/models")
    def models(site: str = Depends(caller)) -> list[dict[str, Any]]:
        """Every published model version: the signed manifest (the site verifies it)."""
        from radflow.federation.model_versions import published

        return published(models_dir)

    @app.get("/v1/sites/{name}/models/{model_hash}/files/{file:path}")
    def model_file(model_hash: str, file: str, site: str = Depends(caller)) -> Response:
        from fastapi.responses import FileResponse

        from radflow.federation.model_versions import model_file as find

        path = find(models_dir, model_hash, file)
        if path is None:
            raise HTTPException(404, "no such model file")
        return FileResponse(path, media_type="application/octet-stream")

    @app.post("/v1/sites/{name}/report")
    def report(body: SiteReport, site: str = Depends(caller)) -> dict[str, Any]:
        """The site's report about itself (versions, models, approvals, policy, health, its
        last job): the hub notes it was heard, and keeps the report where it changed."""
        from radflow.hub.fleet import record_report

        contact(site)
        return {"site": site, "changed": record_report(engine, site, body)}

    add_routes(app, engine, caller, coordinator, home)  # discovery, access requests

    @app.get("/v1/sites/{name}")
    def whoami(site: str = Depends(caller)) -> dict[str, str]:
        return {"site": site, "scope": f"site:{site}"}

    return app
