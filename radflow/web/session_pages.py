"""The admin's page of a web app's sessions: who is logged in, since when, from where; revoke
one (it ends at once: the next request with its cookie needs a new log-in). Revocations are
audited (a site's hash-chained audit log, the hub's audit.jsonl). The same as `radflow site
sessions` and `radflow hub sessions` at the command line."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from radflow.errors import ConfigurationError
from radflow.web.auth import User, check_csrf, requiring
from radflow.web.templating import render

router = APIRouter()
admin = requiring("admin")
NAV = ("Sessions", "/admin/sessions", ("admin",))


@router.get("/admin/sessions")
def sessions_page(request: Request, me: User = Depends(admin)) -> Response:
    store = request.app.state.host.sessions
    return render(request, "sessions.html", {
        "sessions": store.sessions(), "current": request.session.id,
        "flash": request.session.pop("flash", None)})


@router.post("/admin/sessions/{session_id}/revoke")
def revoke(request: Request, session_id: str, csrf: str | None = Form(None),
           me: User = Depends(admin)) -> Response:
    check_csrf(request, csrf)
    host = request.app.state.host
    try:
        (gone,) = host.sessions.revoke(session_id)
    except ConfigurationError as exc:
        raise HTTPException(404, exc.message) from exc
    host.audit(me.sub, "web.session_revoked", {"session": gone["id"], "user": gone["user"]})
    if session_id == request.session.id:  # their own: logged out
        request.session.end()
        return RedirectResponse("/logged-out", 303)
    request.session["flash"] = f"Session {session_id} of {gone['user']} is revoked."
    return RedirectResponse("/admin/sessions", 303)
