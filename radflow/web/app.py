"""The site's web app: log-in, log-out, the home page, and the pages plugins contribute.

    from radflow.web.app import create_app
    app = create_app(site_context)        # served by `python -m radflow.web --site NAME`
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from radflow.site.context import SiteContext
from radflow.web import WebPages, login, session_pages
from radflow.web.auth import LoginRequired, User, user
from radflow.web.host import WebHost
from radflow.web.security import BodyLimit, SecurityHeaders, not_found_for_bad_paths
from radflow.web.sessions import ServerSessions
from radflow.web.templating import render

log = logging.getLogger("radflow.web")
TEMPLATES = Path(__file__).parent / "templates"
FAVICON = Path(__file__).with_name("favicon.svg")  # the apps' icon (and the study report's)
__all__ = ["app_routes", "create_app", "create_web_app", "render"]


def _pages() -> list[WebPages]:
    from radflow.plugins import plugins

    ordered = sorted(plugins(), key=lambda p: p.name == "core")  # core's pages after the work
    return [w for p in ordered for w in getattr(p, "web", ())]


def create_app(ctx: SiteContext, *, tls: bool = False) -> FastAPI:
    """The web app of one site (its worklist and the pages its plugins add)."""
    from radflow.web.host import site_host

    return create_web_app(site_host(ctx, tuple(_pages())), tls=tls)


def create_web_app(host: WebHost, *, tls: bool = False) -> FastAPI:
    """A web app with log-in, log-out, a home page, an admin's sessions page and
    ``host.pages``. Its sessions live in ``host.sessions``; its cookie, named after it, holds
    only a session's random token."""
    from authlib.integrations.starlette_client import OAuth
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

    from radflow.settings import get_settings

    pages = host.pages
    app = FastAPI(title=f"radflow {host.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    for key, value in host.state.items():
        setattr(app.state, key, value)
    app.state.host = host
    app.state.session_seconds = host.session_hours * 3600
    app.state.issuer = host.issuer
    app.state.nav = [entry for w in pages for entry in w.nav] + [session_pages.NAV]
    env = Environment(loader=ChoiceLoader([FileSystemLoader(TEMPLATES)] +
                                          [FileSystemLoader(w.templates) for w in pages]),
                      autoescape=select_autoescape(default=True))
    app.state.templates = Jinja2Templates(env=env)
    oauth = OAuth()
    oauth.register("site", client_id=host.client_id, client_secret=host.client_secret,
                   server_metadata_url=f"{host.issuer}/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid profile email groups",
                                  "code_challenge_method": "S256"})
    app.state.oauth = oauth
    # innermost first: the body limit raises its 413 where the app's handler answers it
    app.add_middleware(BodyLimit, limit=int(get_settings().web_max_body_mb * 2**20))
    app.add_middleware(ServerSessions, store=host.sessions, cookie=host.cookie,
                       max_age=app.state.session_seconds, https_only=tls)
    app.add_middleware(SecurityHeaders, issuer=host.issuer)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not logged in", "fix": "log in at /login"}, 401)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # the query is kept: a shared dashboard address holds its filters there
        return RedirectResponse(f"/login?{urlencode({'next': here})}", 303)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.headers.get("accept", "") \
                .startswith("application/json"):
            return JSONResponse({"error": exc.detail}, exc.status_code)
        return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                      status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        missing = not_found_for_bad_paths(exc)  # an id out of range is no such thing: 404
        if missing is not None:
            return await _http(request, HTTPException(404, missing))
        return await request_validation_exception_handler(request, exc)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "site": host.name, "issuer": app.state.issuer}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # public, as a browser asks for it before any log-in
        return Response(FAVICON.read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, me: User = Depends(user)) -> Response:
        visible = [entry for entry in app.state.nav if me.has(*entry[2])]
        if len(visible) >= 1 and request.query_params.get("stay") is None:
            return RedirectResponse(visible[0][1], 303)
        return render(request, "home.html", {"entries": visible, "hint": host.no_role_hint})

    app.include_router(login.router)
    for w in pages:
        app.include_router(w.router)
    app.include_router(session_pages.router)
    return app


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, those of included routers too (the security
    tests check each)."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str = "") -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:  # fastapi's lazily included router
                walk(inner.routes, prefix + getattr(route.include_context, "prefix", ""))
                continue
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    found.append((method, prefix + route.path))

    walk(list(app.routes))
    return found
