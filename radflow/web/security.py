"""What every response of the web apps carries, and what every request may be.

- A Content-Security-Policy: scripts and styles only from the app itself or inline with the
  response's nonce (``csp_nonce`` in every template: ``<script nonce="{{ csp_nonce }}">``),
  no plugins, no framing, forms posted only to the app and its OpenID provider (the log-out
  goes on to the provider's end-session page). No style attributes: the pages set sizes and
  colours from ``data-`` attributes in script (base.html).
- Request bodies up to a limit (:class:`BodyLimit`; the editor's SEG revision is the largest
  legitimate one, see :data:`radflow.settings.RadflowSettings.web_max_body_mb`).
- Ids in paths that are out of range or not numbers answer 404, as unknown ones do
  (:data:`RowId`, :func:`not_found_for_bad_paths`), never a database error.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import HTTPException, Path
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ID = 2**31 - 1  # PostgreSQL's integer; SQLite's is wider
RowId = Annotated[int, Path(ge=0, le=MAX_ID)]  # a row id or an index in a path
STATIC_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "same-origin"}


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def policy(nonce: str, issuer: str) -> str:
    """The Content-Security-Policy of a page rendered with ``nonce``."""
    return "; ".join([
        "default-src 'self'", f"script-src 'self' 'nonce-{nonce}'",
        f"style-src 'self' 'nonce-{nonce}'", "img-src 'self' data: blob:",
        "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
        f"form-action 'self' {origin(issuer)}"])


class SecurityHeaders:
    """ASGI middleware: every response gets the CSP (with a fresh nonce, which the templates
    read from ``request.state.csp_nonce``), no-store caching unless the route says otherwise,
    and no framing or sniffing."""

    def __init__(self, app: ASGIApp, issuer: str) -> None:
        self.app, self.issuer = app, issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy(nonce, self.issuer))
                headers.setdefault("Cache-Control", "no-store")
                for key, value in STATIC_HEADERS.items():
                    headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def not_found_for_bad_paths(exc: RequestValidationError) -> str | None:
    """The 404 message for a request whose path parameters did not validate (an id too large
    or not a number: no such thing here), else None."""
    bad = [e for e in exc.errors() if e.get("loc", ("",))[0] == "path"]
    if not bad:
        return None
    name = bad[0]["loc"][-1]
    return f"there is no such {str(name).removesuffix('_id')} here (not a valid {name})"


class BodyLimit:
    """ASGI middleware: a request whose body is larger than ``limit`` bytes is answered 413,
    by its Content-Length at once, else as soon as its chunks add up to more (an
    HTTPException from ``receive``, which FastAPI passes on to the app's handler)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the app's error handler answers it
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, counting_receive, send)

    @property
    def message(self) -> str:
        return (f"the request body is larger than {self.limit / 2**20:g} MiB: send less at "
                "once, or raise RADFLOW_WEB_MAX_BODY_MB where the app runs")

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": self.message}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
