"""The site's web app hardened, against the session site and its real provider (canaille):
sessions on the server (logout and revocation end a copied cookie at once, `GET /login` keeps
the session, admins list and revoke at the command line, audited), ids out of range answer 404
on every route that takes one, two log-ins of one user at once both work, users cannot make
themselves groups (= roles) at the provider, and the site's databases are its owner's only.
The pages under the CSP in the browser: tests/test_worklist.py and test_explore.py (no console
shows a CSP violation, conftest's ``csp_violations``)."""

from __future__ import annotations

import base64
import json
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from sqlmodel import col, select
from test_worklist import app_url, cookies, log_in, password

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import AuditEvent, WebSession
from radflow.web.sessions import SessionStore

pytestmark = [pytest.mark.services, pytest.mark.slow]
HUGE = "99999999999999999999999"


def store(site) -> SessionStore:
    return SessionStore(lambda: get_engine(site.catalog_url), WebSession)


def as_user(site, sub: str, roles: list[str]) -> requests.Session:
    """A requests session with a session of ``sub`` made in the site's store (CSRF token t)."""
    token = store(site).create({"user": {"sub": sub, "roles": roles, "name": sub},
                                "csrf": "t", "login_at": time.time()}, 600, "pytest", None)
    http = requests.Session()
    http.cookies.set(f"radflow_{site.name}", token)
    return http


def int_routes(site) -> list[tuple[str, str, list[str]]]:
    """(method, path, its integer parameters) of every route with an integer path parameter."""
    from radflow.web.app import create_app

    found: list[tuple[str, str, list[str]]] = []

    def walk(routes, prefix: str = "") -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes, prefix + getattr(route.include_context, "prefix", ""))
                continue
            dependant = getattr(route, "dependant", None)
            ints = [p.name for p in getattr(dependant, "path_params", ())
                    if p.field_info.annotation is int]
            found.extend((m, prefix + route.path, ints)
                         for m in sorted(route.methods - {"HEAD"}) if ints)

    walk(create_app(site).routes)
    return found


def test_ids_out_of_range_or_not_numbers_answer_404(site) -> None:
    http = as_user(site, "admin", ["admin"])
    routes = int_routes(site)
    assert {path for _, path, _ in routes} >= {"/reviews/{review_id}",
                                               "/series/{uid}/slices/{z}.png"}
    for method, path, ints in routes:
        for bad in (HUGE, "-1", "x1"):
            url = path
            for name in ints:
                url = url.replace(f"{{{name}}}", bad)
            url = re.sub(r"\{[a-z_]+\}", "1.2.3", url)
            answer = http.request(method, app_url(site) + url, timeout=10, allow_redirects=False,
                                  data=None if "/api/" in url else {"csrf": "t"},
                                  json={"corrects": "1.2", "slices": {}} if "/api/" in url
                                  else None, headers={"X-CSRF-Token": "t"})
            assert answer.status_code == 404, (method, url, answer.status_code)
    answer = http.get(f"{app_url(site)}/reviews/{HUGE}", timeout=10)
    assert answer.status_code == 404 and "no such review" in answer.text


def test_logout_ends_the_session_and_get_login_keeps_it(site, browser, cli) -> None:
    page = log_in(browser, site, "radiologist")
    copied = cookies(page)  # what an attacker would copy from the browser
    assert copied.get(f"{app_url(site)}/api/reviews", timeout=10).status_code == 200
    mine = [s for s in json.loads(cli("site", "sessions", "list", "--site", site.name, "--json",
                                      check=True).stdout) if s["user"] == "radiologist"]
    assert mine and mine[0]["user_agent"] and mine[0]["roles"] == ["radiologist"]
    # starting a log-in (a second tab, a bookmark of /login) does not end the session
    away = copied.get(f"{app_url(site)}/login", allow_redirects=False, timeout=10)
    assert away.headers["location"].startswith(f"http://127.0.0.1:{site.config.ports.idp}/")
    assert copied.get(f"{app_url(site)}/api/reviews", timeout=10).status_code == 200
    page.goto(f"{app_url(site)}/reviews")
    page.click("header button:has-text('Log out')")
    page.wait_for_load_state("networkidle")
    answer = copied.get(f"{app_url(site)}/api/reviews", timeout=10)
    assert answer.status_code == 401  # the copied cookie stopped working with the log-out
    page.context.close()


def test_an_admin_revokes_sessions_from_the_command_line(site, cli) -> None:
    http = as_user(site, "radiologist", ["radiologist"])
    assert http.get(f"{app_url(site)}/api/reviews", timeout=10).status_code == 200
    listed = json.loads(cli("site", "sessions", "list", "--site", site.name, "--json",
                            check=True).stdout)
    (mine,) = [s for s in listed if s["user"] == "radiologist" and s["user_agent"] == "pytest"]
    assert "data" not in mine and "token_hash" not in mine
    gone = json.loads(cli("site", "sessions", "revoke", mine["id"], "--site", site.name,
                          "--json", check=True).stdout)
    assert [g["id"] for g in gone] == [mine["id"]]
    assert http.get(f"{app_url(site)}/api/reviews", timeout=10).status_code == 401
    with session_scope(site.catalog_url) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "web.session_revoked")
                             .order_by(col(AuditEvent.seq).desc())).first()
    assert event.actor.startswith("cli:") and mine["id"] in event.detail
    # all of a user's sessions at once; an unknown id is a clear error
    others = [as_user(site, "researcher", ["researcher"]) for _ in range(2)]
    out = cli("site", "sessions", "revoke", "--user", "researcher", "--site", site.name)
    assert out.returncode == 0 and out.stdout.count("revoked") >= 2
    assert all(o.get(f"{app_url(site)}/explore", allow_redirects=False, timeout=10)
               .status_code == 303 for o in others)
    unknown = cli("site", "sessions", "revoke", "0000000000000000", "--site", site.name)
    assert unknown.returncode == 1 and "no session '0000000000000000'" in unknown.stderr


def test_a_signed_cookie_of_the_old_kind_is_no_session(site) -> None:
    import itsdangerous

    me = {"sub": "radiologist", "roles": ["radiologist"], "name": "Demo"}
    payload = base64.b64encode(json.dumps({"user": me, "login_at": time.time()}).encode())
    key = site.secrets.web_session_key.get_secret_value()
    forged = itsdangerous.TimestampSigner(key).sign(payload).decode()
    answer = requests.get(f"{app_url(site)}/reviews", cookies={f"radflow_{site.name}": forged},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def provider_form(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))


def up_to_the_callback(site, user: str) -> tuple[requests.Session, str]:
    """A log-in through the provider's own pages (with requests), up to the web app's callback,
    not followed: the session and the callback's URL (with its one-time code)."""
    http = requests.Session()
    answer = http.get(f"{app_url(site)}/login", timeout=10)  # at the provider's login page
    answer = http.post(answer.url, data={**provider_form(answer.text), "login": user},
                       timeout=10)
    answer = http.post(answer.url, data={**provider_form(answer.text),
                                         "password": password(site, user)},
                       allow_redirects=False, timeout=10)
    location = answer.headers["location"]
    while not location.startswith(f"{app_url(site)}/auth/callback"):
        answer = http.get(urljoin(answer.url, location), allow_redirects=False, timeout=10)
        location = answer.headers["location"]
    return http, location


def test_two_log_ins_of_one_user_at_once(site) -> None:
    """canaille gives two log-ins of one user within a second the same access token and
    refuses the second (HTTP 500 at its token endpoint): the app asks again a second later."""
    flows = [up_to_the_callback(site, "radiologist") for _ in range(2)]
    time.sleep(1 - time.time() % 1)  # both at the start of one second: the same token
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda f: f[0].get(f[1], allow_redirects=False, timeout=60),
                                flows))
    assert [a.status_code for a in answers] == [303, 303], [a.text[:300] for a in answers]
    for http, _ in flows:  # two sessions, both logged in
        assert http.get(f"{app_url(site)}/api/reviews", timeout=10).status_code == 200


def test_users_cannot_make_themselves_groups_at_the_provider(site) -> None:
    idp = f"http://127.0.0.1:{site.config.ports.idp}"
    for user, allowed in (("radiologist", False), ("admin", True)):
        http = requests.Session()
        answer = http.get(f"{idp}/login", timeout=10)
        answer = http.post(answer.url, data={**provider_form(answer.text), "login": user},
                           timeout=10)
        answer = http.post(answer.url, data={**provider_form(answer.text),
                                             "password": password(site, user)}, timeout=10)
        assert answer.ok and "/profile/" in answer.url
        status = http.get(f"{idp}/groups/add", allow_redirects=False, timeout=10).status_code
        assert (status == 200) == allowed, (user, status)


def test_the_sites_databases_are_the_owners_only(site) -> None:
    root = site.paths.root
    files = [root / "idp" / "canaille.sqlite", site.paths.prefect_home / "prefect.db"]
    if site.catalog_url.startswith("sqlite"):
        files.append(Path(site.catalog_url.removeprefix("sqlite:///")))
    for path in files:
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


def hub_web_sessions_checked(home, cli) -> None:
    """The coordinators' web app of a running hub (``home``): its sessions live in the hub
    database (logout and `radflow hub sessions revoke` end them, audited in audit.jsonl), its
    pages carry the CSP, and its databases are the owner's only. Called from
    test_hub_enrolment's `hub up` test (one hub start for both)."""
    from radflow.hub.models import HubWebSession

    hub_store = SessionStore(home.engine, HubWebSession)
    web = home.web_url()

    def coordinator() -> requests.Session:
        token = hub_store.create({"user": {"sub": "coordinator", "roles": ["coordinator"],
                                           "name": "C"}, "csrf": "t"}, 600, "pytest", None)
        http = requests.Session()
        http.cookies.set("radflow_hub", token)
        return http

    http = coordinator()
    page = http.get(f"{web}/studies", timeout=10)
    assert page.status_code == 200 and "script-src 'self' 'nonce-" in \
        page.headers["content-security-policy"]
    listed = json.loads(cli("hub", "sessions", "list", "--json", check=True).stdout)
    assert [s["user"] for s in listed] == ["coordinator"]
    assert http.post(f"{web}/logout", data={"csrf": "t"}, allow_redirects=False,
                     timeout=10).status_code == 303
    assert http.get(f"{web}/studies", allow_redirects=False, timeout=10).status_code == 303
    http = coordinator()
    (row,) = hub_store.sessions()
    cli("hub", "sessions", "revoke", row["id"], check=True)
    assert http.get(f"{web}/studies", allow_redirects=False, timeout=10).status_code == 303
    events = [json.loads(line) for line in (home.root / "audit.jsonl").read_text().splitlines()]
    assert events[-1]["action"] == "web.session_revoked" and events[-1]["detail"]["session"] == \
        row["id"]
    for path in (home.root / "hub.db", home.prefect_home / "prefect.db",
                 home.root / "idp" / "canaille.sqlite"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
