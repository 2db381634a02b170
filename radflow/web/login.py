"""Log-in and log-out of a web app (OpenID Connect through authlib).

- ``GET /login`` starts a log-in at the provider. It keeps the current session: only a
  completed log-in replaces it (with a new session id).
- ``GET /auth/callback`` completes it. The provider may fail to issue a token for a moment
  (canaille makes the same access token for two log-ins of one user within a second, and its
  database refuses the second); the exchange is tried once more a second later, and a failure
  after that is a page that says to log in again, never a 500.
- ``POST /logout`` deletes the session (its row: a copied cookie stops working) and goes on to
  the provider's end-session page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.base_client.errors import OAuthError
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from radflow.web.auth import check_csrf, csrf_token, local_path, roles_from
from radflow.web.templating import render

try:  # the HTTP client authlib uses: httpx2 where it is installed, else httpx
    import httpx2 as http
except ImportError:  # pragma: no cover
    import httpx as http

log = logging.getLogger("radflow.web")
router = APIRouter()
RETRY_AFTER_S = 1.1  # canaille's tokens carry their issue time in whole seconds


@router.get("/login")
async def login(request: Request, next: str | None = None) -> Response:
    host = request.app.state.host
    request.session["next"] = local_path(next)
    try:
        return await request.app.state.oauth.site.authorize_redirect(
            request, f"{host.url}/auth/callback")
    except (http.HTTPError, ValueError) as exc:  # its discovery document cannot be read
        log.warning("the provider %s cannot be reached: %s", host.issuer, type(exc).__name__)
        raise HTTPException(503, f"the identity provider ({host.issuer}) does not answer; try "
                                 "again in a minute, or ask the site's admin") from exc


async def _token(request: Request) -> dict[str, Any]:
    """The provider's tokens for the callback's code: tried twice when the provider fails (5xx).

    Raises:
        HTTPException: 400 for a refused log-in, 503 when the provider cannot complete it.
    """
    client = request.app.state.oauth.site
    state = {k: v for k, v in request.session.items() if k.startswith("_state_")}
    for attempt in (1, 2):
        try:
            return await client.authorize_access_token(request)
        except OAuthError as exc:
            log.warning("log-in refused: %s", exc.error)
            raise HTTPException(400, f"the log-in did not complete ({exc.error}); start again "
                                     "from the worklist") from exc
        except http.HTTPStatusError as exc:
            if attempt == 1 and exc.response.status_code >= 500:
                log.warning("the provider's token endpoint answered HTTP %s; trying again",
                            exc.response.status_code)
                request.session.update(state)  # authlib took the state out: the same code again
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            problem = f"HTTP {exc.response.status_code}"
        except http.HTTPError as exc:
            problem = type(exc).__name__
        break
    log.warning("log-in failed at the provider's token endpoint: %s", problem)
    raise HTTPException(503, f"the identity provider could not complete the log-in ({problem});"
                             " log in again")


@router.get("/auth/callback")
async def callback(request: Request) -> Response:
    host = request.app.state.host
    token = await _token(request)
    claims = dict(token.get("userinfo") or {})
    audience = claims.get("aud")
    audience = [audience] if isinstance(audience, str) else list(audience or ())
    if host.client_id not in audience:  # authlib lets an empty audience pass
        log.warning("log-in refused: ID token for %s, not this app", audience)
        raise HTTPException(400, "the provider's ID token is not meant for this app; "
                                 "check the client's audience at the provider")
    roles = roles_from(claims, host.roles_claim, host.roles)
    if not roles:  # some providers put roles in userinfo only
        claims |= dict(await request.app.state.oauth.site.userinfo(token=token))
        roles = roles_from(claims, host.roles_claim, host.roles)
    target = request.session.get("next", "/")
    request.session.renew({  # a new session id: nothing from before the log-in carries over
        "user": {"sub": claims["sub"], "roles": roles,
                 "name": claims.get("name") or claims.get("preferred_username"),
                 "given_name": claims.get("given_name"), "family_name": claims.get("family_name")},
        "login_at": time.time(), "id_token": token.get("id_token")})
    csrf_token(request)
    await asyncio.to_thread(host.audit, claims["sub"], "web.login", {"roles": roles})
    return RedirectResponse(target, 303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    host = request.app.state.host
    form = await request.form()
    check_csrf(request, form.get("csrf"))
    hint = request.session.get("id_token")
    who = (request.session.get("user") or {}).get("sub")
    request.session.end()
    if who:
        await asyncio.to_thread(host.audit, who, "web.logout", {})
    try:
        metadata = await request.app.state.oauth.site.load_server_metadata()
    except (http.HTTPError, ValueError) as exc:  # logged out here all the same
        log.warning("the provider's metadata cannot be read (%s): no end-session page",
                    type(exc).__name__)
        metadata = {}
    end = metadata.get("end_session_endpoint")
    if not end:
        return RedirectResponse("/logged-out", 303)
    query = {"post_logout_redirect_uri": f"{host.url}/logged-out", "client_id": host.client_id}
    if hint:
        query["id_token_hint"] = hint
    return RedirectResponse(f"{end}?{urlencode(query)}", 303)


@router.get("/logged-out", response_class=HTMLResponse)
def logged_out(request: Request) -> Response:
    return render(request, "logged_out.html", {})
