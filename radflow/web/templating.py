"""Rendering a page of a web app: its template with the app's name, the user, the CSRF token,
the navigation and the response's CSP nonce (``csp_nonce``: every ``<script>`` and ``<style>``
of a template carries it)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from radflow.web.auth import User, csrf_token


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page: the template with the site, the user, the CSRF token and the navigation."""
    app = request.app
    who = request.session.get("user")
    me = User(who["sub"], who.get("name") or who["sub"], frozenset(who.get("roles", ()))) \
        if who else None
    nav = [entry for entry in app.state.nav if me is not None and me.has(*entry[2])]
    return app.state.templates.TemplateResponse(request, template, {
        "site": app.state.host.name, "me": me, "nav": nav,
        "csp_nonce": getattr(request.state, "csp_nonce", ""),
        "csrf": csrf_token(request) if me else "", **context}, status_code=status)
