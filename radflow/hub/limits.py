"""A bound on request bodies (ASGI middleware): a body over ``max_bytes`` is answered 413 and
never kept. A declared ``Content-Length`` over the bound is refused from the header; a streamed
(chunked) body as soon as it passes the bound. The rest of an oversized body is read and
dropped for a few seconds at most (as nginx's lingering close does), so that the client reads
the 413 instead of a reset connection; a body under the bound reaches the app whole.

    app = BodyLimit(app, max_bytes=1 << 20, on_oversize=callback)   # callback(scope) -> None

``on_oversize`` (optional, run in a thread) is told of each refused request first: the hub uses
it to make an authenticated site's oversized release its job's ``invalid_release``.

``bound`` (optional, run in a thread) gives a request its own bound instead of ``max_bytes``:
the hub gives a site's own result route a larger one (a release with model weights weighs a
few MB), and every other request, unauthenticated ones included, the general bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
DEFAULT_MAX_RELEASE_BYTES = 16 << 20  # 16 MiB: a site's release (weights of ~6 M parameters)
DRAIN_SECONDS = 5.0  # how long the rest of an oversized body is read and dropped, at most
DRAIN_FACTOR = 16  # and how much of it: up to this many times the bound

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (JSON ``{"error": "body_too_large",
    "max_bytes": N}``); 400 for a ``Content-Length`` that is no number."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int,
                 on_oversize: Callable[[Scope], None] | None = None,
                 bound: Callable[[Scope], int] | None = None) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes is at least 1")
        self.app, self.max_bytes, self.on_oversize = app, max_bytes, on_oversize
        self.bound = bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if self.bound is None else \
            max(1, await asyncio.to_thread(self.bound, scope))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, b'{"error":"bad_content_length"}')
                return
            if int(declared) > limit:
                await self._too_large(scope, receive, send, limit, 0)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was complete
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit, size,
                                      more=message.get("more_body", False))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int,
                         read: int, more: bool = True) -> None:
        if self.on_oversize is not None:
            await asyncio.to_thread(self.on_oversize, scope)
        if more:
            await _drain(receive, limit * DRAIN_FACTOR - read)
        await _answer(send, 413, b'{"error":"body_too_large","max_bytes":%d}' % limit)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a body: at most ``budget`` bytes, for DRAIN_SECONDS."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
