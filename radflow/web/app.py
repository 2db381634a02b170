"""The site's web app: log-in, log-out, the home page, and the pages plugins contribute.

    from radflow.web.app import create_app
    app = create_app(site_context)        # served by `python -m radflow.web --site NAME`
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from radflow.site.context import SiteContext
from radflow.web import WebPages
from radflow.web.auth import (
    LoginRequired,
    User,
    check_csrf,
    csrf_token,
    local_path,
    roles_from,
    user,
)
from radflow.web.host import WebHost

log = logging.getLogger("radflow.web")
TEMPLATES = Path(__file__).parent / "templates"


def _pages() -> list[WebPages]:
    from radflow.plugins import plugins

    ordered = sorted(plugins(), key=lambda p: p.name == "core")  # core's pages after the work
    return [w for p in ordered for w in getattr(p, "web", ())]


def create_app(ctx: SiteContext, *, tls: bool = False) -> FastAPI:
    """The web app of one site (its worklist and the pages its plugins add)."""
    from radflow.web.host import site_host

    return create_web_app(site_host(ctx, tuple(_pages())), tls=tls)


def create_web_app(host: WebHost, *, tls: bool = False) -> FastAPI:
    """A web app with log-in, log-out, a home page and ``host.pages``. Its session cookie is
    signed with the host's own key and named after it."""
    from authlib.integrations.starlette_client import OAuth
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

    pages = host.pages
    app = FastAPI(title=f"radflow {host.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)
    for key, value in host.state.items():
        setattr(app.state, key, value)
    app.state.host = host
    app.state.session_seconds = host.session_hours * 3600
    app.state.issuer = host.issuer
    app.state.nav = [entry for w in pages for entry in w.nav]
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
    app.add_middleware(SessionMiddleware, secret_key=host.session_key,
                       session_cookie=host.cookie,
                       max_age=int(app.state.session_seconds), same_site="lax", https_only=tls)

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

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "site": host.name, "issuer": app.state.issuer}

    @app.get("/login")
    async def login(request: Request, next: str | None = None) -> Response:
        request.session.clear()
        request.session["next"] = local_path(next)
        return await oauth.site.authorize_redirect(request, f"{host.url}/auth/callback")

    @app.get("/auth/callback")
    async def callback(request: Request) -> Response:
        from authlib.integrations.base_client.errors import OAuthError

        try:
            token = await oauth.site.authorize_access_token(request)
        except OAuthError as exc:
            log.warning("log-in refused: %s", exc.error)
            raise HTTPException(400, f"the log-in did not complete ({exc.error}); "
                                     "start again from the worklist") from exc
        claims = dict(token.get("userinfo") or {})
        audience = claims.get("aud")
        audience = [audience] if isinstance(audience, str) else list(audience or ())
        if host.client_id not in audience:  # authlib lets an empty audience pass
            log.warning("log-in refused: ID token for %s, not this app", audience)
            raise HTTPException(400, "the provider's ID token is not meant for this app; "
                                     "check the client's audience at the provider")
        roles = roles_from(claims, host.roles_claim)
        if not roles:  # some providers put roles in userinfo only
            claims |= dict(await oauth.site.userinfo(token=token))
            roles = roles_from(claims, host.roles_claim)
        target = request.session.get("next", "/")
        request.session.clear()
        request.session.update({
            "user": {"sub": claims["sub"], "roles": roles,
                     "name": claims.get("name") or claims.get("preferred_username")},
            "login_at": time.time(), "id_token": token.get("id_token")})
        csrf_token(request)
        host.audit(claims["sub"], "web.login", {"roles": roles})
        return RedirectResponse(target, 303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        check_csrf(request, form.get("csrf"))
        hint = request.session.get("id_token")
        who = (request.session.get("user") or {}).get("sub")
        request.session.clear()
        if who:
            host.audit(who, "web.logout", {})
        metadata = await oauth.site.load_server_metadata()
        end = metadata.get("end_session_endpoint")
        if not end:
            return RedirectResponse("/logged-out", 303)
        query = {"post_logout_redirect_uri": f"{host.url}/logged-out",
                 "client_id": host.client_id}
        if hint:
            query["id_token_hint"] = hint
        return RedirectResponse(f"{end}?{urlencode(query)}", 303)

    @app.get("/logged-out", response_class=HTMLResponse)
    def logged_out(request: Request) -> Response:
        return render(request, "logged_out.html", {})

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, me: User = Depends(user)) -> Response:
        visible = [entry for entry in app.state.nav if me.has(*entry[2])]
        if len(visible) >= 1 and request.query_params.get("stay") is None:
            return RedirectResponse(visible[0][1], 303)
        return render(request, "home.html", {"entries": visible, "hint": host.no_role_hint})

    for w in pages:
        app.include_router(w.router)
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


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page: the template with the site, the user, the CSRF token and the navigation."""
    app = request.app
    who = request.session.get("user")
    me = User(who["sub"], who.get("name") or who["sub"], frozenset(who.get("roles", ()))) \
        if who else None
    nav = [entry for entry in app.state.nav if me is not None and me.has(*entry[2])]
    return app.state.templates.TemplateResponse(request, template, {
        "site": app.state.host.name, "me": me, "nav": nav,
        "csrf": csrf_token(request) if me else "", **context}, status_code=status)

