"""Server-side sessions for the web apps: the cookie holds a random token (HttpOnly,
SameSite=Lax, Secure under TLS), the session lives in a database row found by the token's hash.

    store = SessionStore(lambda: get_engine(catalog_url), WebSession)
    app.add_middleware(ServerSessions, store=store, cookie="radflow_lab", max_age=8 * 3600)

``request.session`` stays a dict (authlib keeps its state and PKCE verifier in it). A route ends
the session with ``request.session.end()`` (logout: the row is deleted, a copied cookie stops
working at once) or gives it a new id with ``request.session.renew()`` (log-in: the old row is
replaced). A session without a log-in (a log-in in flight) lives :data:`ANONYMOUS_SECONDS`;
expired rows are deleted whenever a session is made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radflow.catalog.models.base import as_utc
from radflow.errors import ConfigurationError

ANONYMOUS_SECONDS = 15 * 60  # a log-in in flight: the provider's page, then the callback
TOUCH_SECONDS = 60  # last-seen is written at most this often


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Loaded:
    """A session row as the middleware needs it."""

    id: str
    data: dict[str, Any]
    last_seen_at: datetime


class SessionStore:
    """The session rows of one web app, in its database (``model``: the catalog's
    :class:`~radflow.catalog.models.WebSession` or the hub's ``HubWebSession``)."""

    def __init__(self, engine: Callable[[], Engine], model: type) -> None:
        self._engine = engine
        self.model = model

    def load(self, token: str) -> Loaded | None:
        """The live session of a cookie's token, or None (unknown, revoked or expired; an
        expired row is deleted)."""
        m = self.model
        with Session(self._engine()) as session:
            row = session.exec(select(m).where(m.token_hash == _hash(token))).first()
            if row is None:
                return None
            if as_utc(row.expires_at) <= _now():
                session.delete(row)
                session.commit()
                return None
            try:
                data = json.loads(row.data)
            except ValueError:
                data = {}
            return Loaded(row.id, data if isinstance(data, dict) else {},
                          as_utc(row.last_seen_at))

    def create(self, data: dict[str, Any], lifetime: float, user_agent: str | None,
               address: str | None) -> str:
        """A new session holding ``data``; returns its cookie token (expired rows go)."""
        token = secrets.token_urlsafe(32)
        now = _now()
        with Session(self._engine()) as session:
            session.exec(delete(self.model).where(col(self.model.expires_at) < now))
            session.add(self.model(id=secrets.token_hex(8), token_hash=_hash(token),
                                   created_at=now, last_seen_at=now,
                                   expires_at=now + timedelta(seconds=lifetime),
                                   user_agent=(user_agent or "")[:200] or None,
                                   address=address, **_columns(data)))
            session.commit()
        return token

    def save(self, session_id: str, data: dict[str, Any]) -> None:
        with Session(self._engine()) as session:
            row = session.get(self.model, session_id)
            if row is None:  # revoked meanwhile: it stays revoked
                return
            for key, value in _columns(data).items():
                setattr(row, key, value)
            row.last_seen_at = _now()
            session.add(row)
            session.commit()

    def touch(self, session_id: str) -> None:
        with Session(self._engine()) as session:
            row = session.get(self.model, session_id)
            if row is not None:
                row.last_seen_at = _now()
                session.add(row)
                session.commit()

    def delete(self, session_id: str) -> None:
        with Session(self._engine()) as session:
            session.exec(delete(self.model).where(col(self.model.id) == session_id))
            session.commit()

    def sessions(self, *, everyone: bool = False) -> list[dict[str, Any]]:
        """The live sessions, newest first: of logged-in users, or ``everyone`` (log-ins in
        flight too). Never the token or the session's data."""
        m = self.model
        with Session(self._engine()) as session:
            query = select(m).where(col(m.expires_at) > _now())
            if not everyone:
                query = query.where(col(m.sub).is_not(None))
            rows = session.exec(query.order_by(col(m.created_at).desc())).all()
            return [describe(r) for r in rows]

    def revoke(self, session_id: str | None = None, *, sub: str | None = None) -> list[dict]:
        """Delete one session (by id) or every session of a user; returns what was deleted.

        Raises:
            ConfigurationError: no such session or user.
        """
        m = self.model
        with Session(self._engine()) as session:
            query = select(m).where(m.id == session_id) if session_id else \
                select(m).where(m.sub == sub)
            rows = session.exec(query).all()
            if not rows:
                what = f"session {session_id!r}" if session_id else f"session of {sub!r}"
                raise ConfigurationError(f"there is no {what}",
                                         fix="list them with `sessions list`")
            gone = [describe(r) for r in rows]
            for row in rows:
                session.delete(row)
            session.commit()
        return gone


def describe(row: Any) -> dict[str, Any]:
    return {"id": row.id, "user": row.sub, "name": row.name, "roles": row.roles.split(),
            "created_at": as_utc(row.created_at).isoformat(timespec="seconds"),
            "last_seen_at": as_utc(row.last_seen_at).isoformat(timespec="seconds"),
            "expires_at": as_utc(row.expires_at).isoformat(timespec="seconds"),
            "user_agent": row.user_agent, "address": row.address}


def _columns(data: dict[str, Any]) -> dict[str, Any]:
    who = data.get("user") or {}
    return {"data": json.dumps(data, separators=(",", ":")), "sub": who.get("sub"),
            "name": who.get("name"), "roles": " ".join(who.get("roles", ()))}


class SessionData(dict):
    """``request.session``: a dict, plus :meth:`end` (log-out) and :meth:`renew` (log-in)."""

    def __init__(self, data: dict[str, Any], session_id: str | None) -> None:
        super().__init__(data)
        self.id = session_id
        self.ended = False
        self.renewed = False
        self.snapshot = _dump(data)

    def end(self) -> None:
        """Delete the session (its row and the cookie)."""
        self.clear()
        self.ended = True

    def renew(self, data: dict[str, Any]) -> None:
        """Replace the session with a new one (a new id and token) holding ``data``."""
        self.clear()
        self.update(data)
        self.renewed = True

    @property
    def modified(self) -> bool:
        return _dump(self) != self.snapshot


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)


class ServerSessions:
    """ASGI middleware: ``scope["session"]`` from the store, written back before the response
    starts (the database calls run in a thread)."""

    def __init__(self, app: ASGIApp, store: SessionStore, cookie: str, max_age: float,
                 https_only: bool = False) -> None:
        self.app, self.store, self.cookie = app, store, cookie
        self.max_age, self.https_only = max_age, https_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        token = connection.cookies.get(self.cookie)
        loaded = await run_in_threadpool(self.store.load, token) if token else None
        session = SessionData(loaded.data if loaded else {}, loaded.id if loaded else None)
        scope["session"] = session
        stale_cookie = token is not None and loaded is None

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = await run_in_threadpool(self._commit, session, loaded, connection)
                if cookie is None and stale_cookie:
                    cookie = ""
                if cookie is not None:
                    MutableHeaders(scope=message).append("Set-Cookie", self._cookie(cookie))
            await send(message)

        await self.app(scope, receive, send_with_session)

    def _commit(self, session: SessionData, loaded: Loaded | None,
                connection: HTTPConnection) -> str | None:
        """Write the session back; returns the cookie to set ("" deletes it), or None."""
        if session.ended:
            if loaded is not None:
                self.store.delete(loaded.id)
            return ""
        if session.renewed or (loaded is None and session.modified and session):
            if loaded is not None:
                self.store.delete(loaded.id)
            lifetime = self.max_age if session.get("user") else ANONYMOUS_SECONDS
            client = connection.client.host if connection.client else None
            return self.store.create(dict(session), lifetime,
                                     connection.headers.get("user-agent"), client)
        if loaded is None:
            return None
        if session.modified:
            self.store.save(loaded.id, dict(session))
        elif (_now() - loaded.last_seen_at).total_seconds() > TOUCH_SECONDS:
            self.store.touch(loaded.id)
        return None

    def _cookie(self, token: str) -> str:
        parts = [f"{self.cookie}={token}", "Path=/", "HttpOnly", "SameSite=Lax"]
        parts.append(f"Max-Age={int(self.max_age)}" if token else
                     "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.https_only:
            parts.append("Secure")
        return "; ".join(parts)
