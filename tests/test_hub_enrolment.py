"""The hub's federation API under a real uvicorn on loopback: enrolment with one-time codes,
Ed25519 site keys and the pinned hub key, OAuth2 client credentials with private_key_jwt,
and the auth sweep: every site route refuses no token, another site's token, an expired token
and a revoked site's token."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import free_port
from sqlmodel import Session, select
from test_web_security import hub_web_sessions_checked

from radflow.errors import ConfigurationError, SiteError
from radflow.federation.client import HubClient, join
from radflow.federation.signing import fingerprint, generate
from radflow.hub import registry
from radflow.hub.home import HubHome
from radflow.hub.models import HubToken
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.site.components import component

pytestmark = [pytest.mark.services]


def enrolled(hub, tmp_path: Path, name: str) -> HubClient:
    code = registry.add_site(hub["engine"], name)
    join(hub["url"], name, code, tmp_path / name)
    return HubClient(tmp_path / name)


def test_a_site_joins_and_gets_tokens(hub, tmp_path) -> None:
    code = registry.add_site(hub["engine"], "essen")
    assert len(code) == 27 and registry.sites(hub["engine"])[0].code_hash != code  # hash only
    info = join(hub["url"], "essen", code, tmp_path / "essen")
    key = tmp_path / "essen" / "federation" / "site.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    hub_public = (hub["folder"] / "hub.key.pub").read_bytes()
    assert info["hub_fingerprint"] == fingerprint(hub_public)  # the pinned key is the hub's
    (row,) = [s for s in registry.sites(hub["engine"]) if s.name == "essen"]
    assert row.status == "enrolled" and row.fingerprint == info["site_fingerprint"]
    assert key.read_bytes() not in (tmp_path / "essen" / "federation" / "hub.json").read_bytes()

    client = HubClient(tmp_path / "essen")
    answer = client.get("")
    assert answer.status_code == 200 and answer.json() == {"site": "essen",
                                                           "scope": "site:essen"}
    began = time.monotonic()
    assert client.get("/jobs", wait=1).json() == {"jobs": []}
    assert time.monotonic() - began >= 0.9  # a long poll is held open, not answered at once
    # the code was for one use; a wrong code, or a site that joined already, is refused
    with pytest.raises(ConfigurationError, match="bad_code"):
        join(hub["url"], "essen", code, tmp_path / "again")
    registry.add_site(hub["engine"], "bonn")
    with pytest.raises(ConfigurationError, match="bad_code"):
        join(hub["url"], "bonn", "0000-0000", tmp_path / "bonn")
    with pytest.raises(ConfigurationError, match="joined a hub already"):
        join(hub["url"], "essen", code, tmp_path / "essen")
    with pytest.raises(SiteError, match="did not answer"):
        join(f"http://127.0.0.1:{free_port()}", "x", "code", tmp_path / "x")


def test_client_assertions_are_checked(hub, tmp_path) -> None:
    client = enrolled(hub, tmp_path, "koeln")
    token_url = client.info["token_url"]

    def ask(assertion: str) -> requests.Response:
        return requests.post(token_url, timeout=10, data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": registry.ASSERTION_TYPE})

    good = client.assertion()
    assert ask(good).status_code == 200
    assert ask(good).json() == {"error": "invalid_client"}  # replayed
    assert ask(client.assertion(lifetime=3600)).status_code == 401  # too long-lived
    assert ask("not.a.jwt").status_code == 401
    # issued in the future: a minute of clock skew is allowed, more is refused
    assert ask(signed(client, iat_in=30)).status_code == 200
    future = ask(signed(client, iat_in=300))
    assert future.status_code == 401 and future.json() == {"error": "invalid_client"}
    # signed by another key under this site's name
    other = tmp_path / "mallory"
    other.mkdir()
    (other / "federation").mkdir()
    generate(other / "federation" / "site.key")
    (other / "federation" / "hub.json").write_text((tmp_path / "koeln" / "federation" /
                                                    "hub.json").read_text())
    assert ask(HubClient(other).assertion()).status_code == 401
    assert requests.post(token_url, timeout=10, data={
        "grant_type": "client_credentials"}).status_code == 401  # no client authentication


def signed(client: HubClient, iat_in: int) -> str:
    """A client assertion of ``client``'s site issued ``iat_in`` seconds from now (valid 20 s
    after that: never too long-lived)."""
    import secrets

    from joserfc import jwt
    from joserfc.jwk import OKPKey

    key = OKPKey.import_key(client.key_path.read_bytes())
    now = int(time.time())
    return jwt.encode({"alg": "Ed25519"}, {
        "iss": client.info["site"], "sub": client.info["site"], "aud": client.info["token_url"],
        "iat": now + iat_in, "exp": now + iat_in + 20, "jti": secrets.token_urlsafe(16)},
        key, algorithms=["Ed25519"])


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "federation" / "flows" / "federated-cohort-count"


def published(hub) -> str:
    """Publish the first study's flow package on the test hub; returns its hash."""
    from radflow.federation.bundle import build
    from radflow.federation.manifest import sign_version
    from radflow.federation.signing import load

    manifest, bundle = build(PACKAGE, publisher="test@hub")
    signed = sign_version(manifest, load(hub["folder"] / "hub.key"))
    registry.publish(hub["engine"], signed, bundle)
    return signed.hash


def test_published_versions_are_verified_at_the_site(hub, tmp_path) -> None:
    from radflow.federation.bundle import build
    from radflow.federation.policy import SitePolicy, save_policy
    from radflow.federation.signing import SignatureInvalid
    from radflow.federation.versions import fetch, offered
    from radflow.hub.models import HubVersion

    client = enrolled(hub, tmp_path, "mainz")
    version = published(hub)
    assert version == build(PACKAGE, publisher="test@hub")[0].content_hash()  # deterministic
    again = build(PACKAGE, publisher="test@hub")[1]
    assert again == build(PACKAGE, publisher="test@hub")[1]  # the same bundle bytes
    (row,) = [r for r in offered(tmp_path / "mainz") if r["hash"] == version]
    assert (row["signature"], row["approved"], row["name"]) == ("verified", False,
                                                               "federated-cohort-count")
    assert set(row["release_schema"]["properties"]) == {"n", "matching"}
    signed, files = fetch(tmp_path / "mainz", version)
    assert "site.py" in files and signed.manifest.requires == {"radflow": ">=0.1"}
    save_policy(tmp_path / "mainz", SitePolicy(approved=[version]))
    assert [r["approved"] for r in offered(tmp_path / "mainz") if r["hash"] == version] == [True]

    with Session(hub["engine"]) as session:  # one byte of the stored bundle changes
        stored = session.get(HubVersion, version)
        original = stored.bundle
        stored.bundle = original.replace(b"count_cohort", b"count_cohorT", 1)
        session.add(stored)
        session.commit()
    try:
        with pytest.raises(SignatureInvalid, match="files"):
            fetch(tmp_path / "mainz", version)
    finally:
        with Session(hub["engine"]) as session:
            stored = session.get(HubVersion, version)
            stored.bundle = original
            session.add(stored)
            session.commit()
    assert client.get(f"/versions/sha256:{'0' * 64}/bundle").status_code == 404


def site_routes(app) -> list[tuple[str, str]]:
    from radflow.web.app import app_routes

    return [(m, p) for m, p in app_routes(app) if p.startswith("/v1/sites/{name}")]


def call(hub, method: str, route: str, site: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, hub["url"] + route.replace("{name}", site), timeout=10,
                            headers=headers, json={"refusal": "not_approved"}).status_code


def test_auth_sweep_of_every_site_route(hub, tmp_path) -> None:
    a, b = enrolled(hub, tmp_path, "site-a"), enrolled(hub, tmp_path, "site-b")
    version = published(hub)
    routes = [(m, r.replace("{version_hash}", version).replace("{job_id}", "no-such-job"))
              for m, r in site_routes(hub["app"])]
    assert len(routes) >= 5 and any(m == "POST" for m, _ in routes)
    token_a = a.token()
    for method, route in routes:
        assert call(hub, method, route, "site-a", None) == 401
        assert call(hub, method, route, "site-a", "made-up") == 401
        assert call(hub, method, route, "site-a", b.token()) == 403  # another site's
        # 404: no such job; 422: the refusal this sweep posts is no site report, summary or
        # access decision (checked only once the token is: a caller without one learns
        # nothing of the schema)
        schema = route.endswith(("/report", "/discovery")) or "/access-requests/" in route
        assert call(hub, method, route, "site-a", token_a) in (
            (422,) if schema else (200, 404)), route

    with Session(hub["engine"]) as session:  # let site-a's token expire
        for row in session.exec(select(HubToken).where(HubToken.site == "site-a")):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
            session.add(row)
        session.commit()
    for method, route in routes:
        assert call(hub, method, route, "site-a", token_a) == 401

    # the coordinators' routes take a coordinator's API token, and only that
    from radflow.web.app import app_routes

    coordinator_routes = [(m, r) for m, r in app_routes(hub["app"])
                          if r.startswith(("/v1/studies", "/v1/flows", "/v1/schedules"))]
    assert len(coordinator_routes) >= 4
    token_id, coordinator = registry.create_api_token(hub["engine"], "c.oord")
    for method, route in coordinator_routes:
        route = route.replace("{study_id}", "nosuchstudy").replace("{name}", "no-such-flow") \
            .replace("{slug}", "radflow-00000000")
        assert call(hub, method, route, "", None) == 401
        assert call(hub, method, route, "", b.token()) == 401  # a site's token is no coordinator's
        assert call(hub, method, route, "", "rfh_made_up") == 401
        assert call(hub, method, route, "", coordinator) in (200, 422, 503)  # 503: no Prefect here
    for method, route in routes:  # and a coordinator's token is no site's
        assert call(hub, method, route, "site-b", coordinator) == 401
    registry.revoke_api_token(hub["engine"], token_id)
    assert call(hub, "GET", "/v1/flows", "", coordinator) == 401
    _, short_lived = registry.create_api_token(hub["engine"], "c.oord", days=1)
    with Session(hub["engine"]) as session:
        from radflow.hub.models import HubApiToken

        for row in session.exec(select(HubApiToken)):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
            session.add(row)
        session.commit()
    assert call(hub, "GET", "/v1/flows", "", short_lived) == 401

    fresh_b = b.token()
    registry.revoke_site(hub["engine"], "site-b")  # cut off at once
    for method, route in routes:
        assert call(hub, method, route, "site-b", fresh_b) == 401
    b._token = None
    with pytest.raises(SiteError, match="invalid_client"):
        b.token()


def test_the_hub_and_join_from_the_command_line(site, cli) -> None:
    import json

    port = free_port()
    try:
        up = json.loads(cli("hub", "up", "--port", str(port), "--json", check=True).stdout)
        assert up["url"] == f"http://127.0.0.1:{port}" and up["fingerprint"].startswith("SHA256:")
        code = json.loads(cli("hub", "site", "add", "alpha", "--json", check=True).stdout)["code"]
        joined = json.loads(cli("site", "join", up["url"], "--code", code, "--site", "alpha",
                                "--json", check=True).stdout)
        assert joined["hub_fingerprint"] == up["fingerprint"]  # both sides print the same
        # the site runs: joining started its agent, which `site status` now shows running
        assert joined["agent"] == "started"
        assert component("agent").status(site).state == "running"
        listed = json.loads(cli("hub", "site", "list", "--json", check=True).stdout)
        assert {"name": "alpha", "status": "enrolled",
                "fingerprint": joined["site_fingerprint"]} in listed
        assert HubClient(site.paths.root).get("").json()["site"] == "alpha"
        out = json.loads(cli("publish", str(PACKAGE), "--json", check=True).stdout)
        assert out["name"] == "federated-cohort-count" and out["hash"].startswith("sha256:")
        offered_here = json.loads(cli("site", "versions", "--site", "alpha", "--json",
                                      check=True).stdout)
        assert [(v["hash"], v["signature"], v["approved"]) for v in offered_here] == \
            [(out["hash"], "verified", False)]
        cli("site", "approve", out["hash"], "--site", "alpha", check=True)  # the hub offers it
        unknown = cli("site", "approve", "sha256:" + "0" * 64, "--site", "alpha")
        assert unknown.returncode == 1 and "offers no version" in unknown.stderr
        empty = cli("site", "approve", "", "--site", "alpha")
        assert empty.returncode == 1 and "not a flow version hash" in empty.stderr
        assert json.loads(cli("site", "policy", "show", "--site", "alpha", "--json",
                              check=True).stdout)["approved"] == [out["hash"]]
        cli("site", "revoke", out["hash"], "--site", "alpha", check=True)
        cli("hub", "site", "revoke", "alpha", check=True)
        with pytest.raises(SiteError, match="invalid_client"):
            HubClient(site.paths.root).token()
        hub_web_sessions_checked(HubHome.of(Path(os.environ["RADFLOW_HOME"])), cli)
        away = cli("hub", "up", "--bind", "0.0.0.0")
        assert away.returncode == 1 and "without TLS" in away.stderr
    finally:
        cli("hub", "down")
        import shutil

        component("agent").process(site).stop()  # the session site leaves the hub again
        shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
    assert cli("hub", "status").returncode == 1


def test_a_stopped_site_joins_and_is_told_how_to_start_its_agent(hub, tmp_path) -> None:
    """`site join` of a site that is not running enrols it, starts nothing, and says that
    `radflow site up --site NAME` starts the agent."""
    import os
    import subprocess

    from conftest import RADFLOW

    from radflow.site.config import SiteConfig, SitePaths, aet_for, allocate_ports, save_config

    home = tmp_path / "home"
    paths = SitePaths(home, "beta")
    paths.make()
    save_config(paths, SiteConfig(name="beta", aet=aet_for("beta"), ports=allocate_ports(home, {})))
    code = registry.add_site(hub["engine"], "beta")
    env = {**os.environ, "RADFLOW_HOME": str(home)}

    def join_beta(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RADFLOW, "site", "join", hub["url"], "--code", code, "--site",
                               "beta", *extra], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    said = join_beta()
    assert said.returncode == 0, said.stderr
    assert "agent: not started" in said.stdout
    assert "`radflow site up --site beta` starts it" in " ".join(said.stdout.split())
    assert [s.status for s in registry.sites(hub["engine"]) if s.name == "beta"] == ["enrolled"]
    assert component("agent").process(SiteManager(RadflowSettings(home=home))
                                      .context("beta")).pid is None


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A TLS certificate for 127.0.0.1 and its key (a private CA of one)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radflow test hub")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = folder / "hub.crt", folder / "hub.key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.mark.postgres
def test_a_hub_behind_tls(tmp_path, postgres) -> None:
    """`hub up` with a certificate: sites reach it only over TLS, a site that does not trust
    the certificate is told what to pass, and one given the CA joins and gets tokens; a
    restarted hub keeps serving TLS without the flags again. This hub's database and its
    Prefect server's are on PostgreSQL (the other hub tests run on SQLite)."""
    import json
    import os
    import subprocess

    import psycopg
    from conftest import RADFLOW

    databases = {part: postgres.create_database(f"tls_hub_{part}") for part in ("hub", "prefect")}

    certfile, keyfile = self_signed(tmp_path)
    env = {**os.environ, "RADFLOW_HOME": str(tmp_path / "home")}

    def hub_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RADFLOW, *args], env=env, capture_output=True, text=True,
                              timeout=300, check=False)

    port = free_port()
    try:
        half = hub_cli("hub", "up", "--certfile", str(certfile))
        assert half.returncode == 1 and "both --certfile and --keyfile" in half.stderr
        up = hub_cli("hub", "up", "--port", str(port), "--prefect-port", str(free_port()),
                     "--certfile", str(certfile), "--keyfile", str(keyfile), "--json",
                     "--database-url", databases["hub"],
                     "--prefect-database-url", databases["prefect"])
        assert up.returncode == 0, up.stderr
        url = json.loads(up.stdout)["url"]
        assert url == f"https://127.0.0.1:{port}"
        with pytest.raises(requests.ConnectionError):  # no plain HTTP on that port
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        code = json.loads(hub_cli("hub", "site", "add", "mainz", "--json").stdout)["code"]
        with pytest.raises(SiteError, match="does not trust") as refused:
            join(url, "mainz", code, tmp_path / "untrusting")
        assert "--ca-bundle" in refused.value.fix
        join(url, "mainz", code, tmp_path / "mainz", ca_bundle=certfile)
        client = HubClient(tmp_path / "mainz")
        assert client.get("").json() == {"site": "mainz", "scope": "site:mainz"}
        assert hub_cli("hub", "down").returncode == 0
        again = hub_cli("hub", "up", "--json")  # the TLS settings were kept, and the databases
        assert again.returncode == 0 and json.loads(again.stdout)["url"] == url
        client._token = None
        assert client.get("").status_code == 200
        with psycopg.connect(databases["hub"]) as connection:
            assert connection.execute("SELECT name FROM hub_site").fetchall() == [("mainz",)]
        with psycopg.connect(databases["prefect"]) as connection:
            assert connection.execute("SELECT name FROM work_pool WHERE name = 'hub'").fetchall()
            assert connection.execute("SELECT count(*) FROM worker").fetchone()[0] > 0
        assert not [p for p in (tmp_path / "home").rglob("*.db") if "prefect" in p.name]
        password = databases["hub"].split(":")[2].split("@")[0]
        logs = [p for p in (tmp_path / "home").rglob("*.log") if p.is_file()]
        assert logs and not [p for p in logs if password in p.read_text(errors="replace")]
    finally:
        hub_cli("hub", "down")
