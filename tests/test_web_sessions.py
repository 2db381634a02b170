"""The web apps' sessions and headers, on a real catalog database, without the site's services:
sessions live on the server (logout and revocation end them at once, expired ones are gone),
every response has a Content-Security-Policy whose nonce the page uses, no template has an
inline script, style or handler without it, bodies have a size limit, and only known roles
count. The same app with the real provider and browser: tests/test_worklist.py."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ENGINES, new_database
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from radflow.audit import verify
from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import AuditEvent, WebSession
from radflow.web.auth import roles_from
from radflow.web.host import WebHost
from radflow.web.sessions import ANONYMOUS_SECONDS, SessionStore

REPO = Path(__file__).resolve().parents[1]
ADMIN = {"sub": "ada", "roles": ["admin"], "name": "Ada"}
READER = {"sub": "rita", "roles": ["radiologist"], "name": "Rita"}


@pytest.fixture(params=ENGINES)
def app_and_store(request, tmp_path, monkeypatch):
    from radflow.audit import record
    from radflow.web.app import create_web_app

    monkeypatch.setenv("RADFLOW_WEB_MAX_BODY_MB", "1")
    url = new_database(request, request.param, tmp_path, "web")
    store = SessionStore(lambda: get_engine(url), WebSession)

    def audit(actor: str, action: str, detail: dict) -> None:
        record(url, actor=actor, action=action, subject="web:test", detail=detail)

    host = WebHost(name="test", cookie="radflow_test", url="http://testserver",
                   issuer="http://127.0.0.1:9", client_id="c", client_secret="s", sessions=store,
                   session_hours=1.0, roles_claim="groups", roles=("admin", "radiologist"),
                   pages=(), audit=audit)
    return create_web_app(host), store, url


def logged_in(store: SessionStore, who: dict, client: TestClient) -> str:
    token = store.create({"user": who, "csrf": "t", "login_at": time.time()}, 3600, "pytest",
                         "127.0.0.1")
    client.cookies.set("radflow_test", token)
    return token


def test_logout_and_revocation_end_a_session_at_once(app_and_store) -> None:
    app, store, url = app_and_store
    client = TestClient(app, follow_redirects=False)
    token = logged_in(store, ADMIN, client)
    assert client.get("/admin/sessions").status_code == 200
    with Session(get_engine(url)) as session:
        (row,) = session.exec(select(WebSession)).all()
        assert token not in row.token_hash and token not in row.data  # only its hash is kept
        assert (row.sub, row.roles, row.user_agent) == ("ada", "admin", "pytest")

    answer = client.post("/logout", data={"csrf": "t"})
    assert answer.status_code == 303 and "Max-Age=0" in answer.headers["set-cookie"]
    copied = TestClient(app, follow_redirects=False, cookies={"radflow_test": token})
    assert copied.get("/admin/sessions").status_code == 303  # the copied cookie is no session
    assert store.sessions(everyone=True) == []

    # an admin revokes another's session on the page: it ends at once, and it is audited
    client = TestClient(app, follow_redirects=False)
    logged_in(store, ADMIN, client)
    other = TestClient(app, follow_redirects=False)
    logged_in(store, READER, other)
    page = client.get("/admin/sessions").text
    (rita,) = [s for s in store.sessions() if s["user"] == "rita"]
    assert f'data-session="{rita["id"]}"' in page and "(this one)" in page
    assert client.post(f"/admin/sessions/{rita['id']}/revoke", data={"csrf": "x"}) \
        .status_code == 403  # CSRF
    assert other.get("/").status_code == 200  # logged in: her start page
    assert client.post(f"/admin/sessions/{rita['id']}/revoke",
                       data={"csrf": "t"}).headers["location"] == "/admin/sessions"
    assert other.get("/").headers["location"].startswith("/login")
    assert client.post("/admin/sessions/0123456789abcdef/revoke",
                       data={"csrf": "t"}).status_code == 404
    # a radiologist has no sessions page
    third = TestClient(app, follow_redirects=False)
    logged_in(store, READER, third)
    assert third.get("/admin/sessions").status_code == 403
    with session_scope(url) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
        revoked = [e for e in events if e.action == "web.session_revoked"]
        assert len(revoked) == 1 and revoked[0].actor == "ada" and "rita" in revoked[0].detail
    assert verify(url).ok


def test_expired_and_anonymous_sessions(app_and_store) -> None:
    app, store, url = app_and_store
    client = TestClient(app, follow_redirects=False)
    logged_in(store, READER, client)
    with Session(get_engine(url)) as session:
        row = session.exec(select(WebSession)).one()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        session.commit()
    answer = client.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert "Max-Age=0" in answer.headers["set-cookie"]  # the stale cookie is cleared
    with Session(get_engine(url)) as session:
        assert session.exec(select(WebSession)).all() == []  # and its row is gone
    # a session without a log-in (the provider's page is open) lives minutes, not hours
    token = store.create({"next": "/"}, ANONYMOUS_SECONDS, None, None)
    assert store.sessions() == [] and len(store.sessions(everyone=True)) == 1
    (row,) = store.sessions(everyone=True)
    lifetime = datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(
        row["created_at"])
    assert lifetime == timedelta(seconds=ANONYMOUS_SECONDS)
    assert store.load(token).data == {"next": "/"}
    assert store.load("made-up") is None


def test_the_cookie_under_tls_and_a_provider_that_does_not_answer(app_and_store) -> None:
    from radflow.web.app import create_web_app

    app, store, _ = app_and_store
    client = TestClient(create_web_app(app.state.host, tls=True), follow_redirects=False)
    logged_in(store, ADMIN, client)
    cookie = client.post("/logout", data={"csrf": "t"}).headers["set-cookie"]
    assert cookie.startswith("radflow_test=;") and "Secure" in cookie and "HttpOnly" in cookie
    answer = client.get("/login")  # the provider (port 9) is not there: a clear page
    assert answer.status_code == 503 and "does not answer" in answer.text


def test_every_response_has_a_csp_whose_nonce_the_page_uses(app_and_store) -> None:
    app, store, _ = app_and_store
    client = TestClient(app, follow_redirects=False)
    logged_in(store, ADMIN, client)
    pages = [client.get("/admin/sessions"), client.get("/logged-out"), client.get("/nowhere"),
             client.get("/healthz")]
    nonces = set()
    for answer in pages:
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
        assert "form-action 'self' http://127.0.0.1:9" in policy  # logout goes to the provider
        nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
        nonces.add(nonce)
        if answer.headers["content-type"].startswith("text/html"):
            tags = re.findall(r"<(script|style)([^>]*)>", answer.text)
            assert tags and all(f'nonce="{nonce}"' in attrs for _, attrs in tags)
    assert len(nonces) == len(pages)  # a new one each time


TEMPLATES = [*(REPO / "radflow").rglob("templates/*.html"),
             *(REPO / "plugins").rglob("templates/*.html")]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_have_no_inline_code_the_csp_would_block(path: Path) -> None:
    text = path.read_text()
    if path.name == "study_report.html":  # a document of its own, served with its own CSP
        assert "<script" not in text
        return
    assert not re.search(r"\sstyle\s*=", text), "a style attribute: use a class or data-*"
    assert not re.search(r"\son[a-z]+\s*=", text), "an inline handler: use addEventListener"
    assert "javascript:" not in text
    for tag in re.findall(r"<(?:script|style)[^>]*>", text):
        assert 'nonce="{{ csp_nonce }}"' in tag, tag


def test_request_bodies_have_a_limit(app_and_store) -> None:
    app, store, _ = app_and_store
    client = TestClient(app, follow_redirects=False)
    logged_in(store, ADMIN, client)
    big = b"csrf=t&x=" + b"a" * (2**20)
    answer = client.post("/logout", content=big,
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and "RADFLOW_WEB_MAX_BODY_MB" in answer.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b"csrf=t&x="
        for _ in range(20):
            yield b"a" * 65536

    answer = client.post("/logout", content=chunks(),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert client.get("/admin/sessions").status_code == 200  # still logged in
    assert client.post("/logout", data={"csrf": "t"}).status_code == 303  # a small body passes


def test_only_known_roles_count() -> None:
    known = ("admin", "radiologist")
    assert roles_from({"groups": ["radiologist", "superusers", "Admin"]}, "groups", known) == \
        ["radiologist"]
    assert roles_from({"groups": "admin,radiologist"}, "groups", known) == ["admin", "radiologist"]
    assert roles_from({"realm_access": {"roles": ["admin"]}}, "realm_access.roles", known) == \
        ["admin"]
    assert roles_from({"groups": ["made-by-a-user"]}, "groups", known) == []
