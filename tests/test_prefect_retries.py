"""Prefect's SQLite server answers 500 when a deferred transaction meets another writer ("database
is locked"): CI saw a site fail to start on saving its block. The site's own Prefect server is put
behind a proxy that answers one such 500 at the worst moment; the call must go through."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from radflow.prefect_api import PrefectApi, ResumeRefused
from radflow.site.context import SiteContext
from radflow.site.registration import register_site_blocks


class LockedOnce:
    """A proxy to a real Prefect server that answers the first request matching ``fault`` as
    Prefect does when its database is locked, and forwards everything else."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.fault: tuple[str, re.Pattern[str]] | None = None
        self.seen: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fault and self.command == proxy.fault[0] \
                        and proxy.fault[1].search(self.path):
                    proxy.fault = None
                    proxy.seen.append((self.command, self.path, 500))
                    payload = b'{"exception_message": "Internal Server Error"}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                answer = requests.request(self.command, proxy.target + self.path, data=body,
                                          headers=headers, timeout=30)
                proxy.seen.append((self.command, self.path, answer.status_code))
                self.send_response(answer.status_code)
                for key in ("Content-Type",):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits(self, method: str, pattern: str) -> list[int]:
        return [code for m, path, code in self.seen if m == method and re.search(pattern, path)]

    def went_through(self, method: str, pattern: str, ok: tuple[int, ...]) -> bool:
        """The proxy's 500 came first, and the first answer after it that is not a retry is in
        ``ok``. Retries may meet Prefect's own 503, which its server gives while its SQLite is
        busy on a loaded machine (CI saw [500, 503, 201])."""
        hits = self.hits(method, pattern)
        answers = [code for code in hits[1:] if code not in (500, 503)]
        return bool(hits) and hits[0] == 500 and bool(answers) and answers[0] in ok


@pytest.fixture()
def proxy(site: SiteContext) -> Iterator[LockedOnce]:
    proxy = LockedOnce(site.prefect_url)
    yield proxy
    proxy.server.shutdown()


def test_a_site_saves_its_blocks_through_a_locked_database(site, proxy, monkeypatch):
    # (the block's events go by websocket, which the proxy does not carry)
    monkeypatch.setattr("prefect.events.utilities.should_emit_events", lambda: False)
    # a copy of the site under another name, whose Prefect is the proxy (the session site's own
    # blocks stay as they are)
    ports = site.config.ports.model_copy(update={"prefect": proxy.port})
    probe = dataclasses.replace(site, config=site.config.model_copy(
        update={"name": "locked-probe", "ports": ports}))
    proxy.fault = ("POST", re.compile(r"^/api/block_documents/$"))

    register_site_blocks(probe)

    assert proxy.fault is None, "the fault was never reached"
    assert proxy.went_through("POST", r"^/api/block_documents/$", ok=(201,)), proxy.seen
    saved = requests.get(f"{site.prefect_api_url}/block_types/slug/radflow-site/block_documents/name/"
                         "locked-probe", auth=site.prefect_auth(), timeout=10)
    assert saved.status_code == 200, saved.text
    # the site's processes (worker, flow runs, web app) are told the same
    assert site.prefect_client_env()["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500"


def test_a_decision_resumes_its_run_through_a_locked_database(site, proxy):
    auth = site.prefect_auth()
    direct = PrefectApi(site.prefect_api_url, auth=auth)  # (it retries Prefect's own 503s)
    flow = direct._request("POST", "flows/", "a flow", json={"name": "locked-probe"}).json()
    run = direct._request("POST", "flow_runs/", "a paused run", json={
        "flow_id": flow["id"], "state": {"type": "PAUSED", "name": "Paused"}}).json()
    try:
        proxy.fault = ("POST", re.compile(rf"^/api/flow_runs/{run['id']}/resume$"))
        client = PrefectApi(f"http://127.0.0.1:{proxy.port}/api", auth=auth)

        resumed = client.resume(run["id"])

        assert proxy.went_through("POST", r"/resume$", ok=(200, 201)), proxy.seen
        assert resumed.state == "RUNNING"
    finally:
        direct._request("DELETE", f"flow_runs/{run['id']}", "a clean-up", ok=(200, 204))


def test_the_typed_client_creates_a_run_through_a_locked_database(site, proxy):
    client = PrefectApi(f"http://127.0.0.1:{proxy.port}/api", auth=site.prefect_auth())
    flow = client._request("POST", "flows/", "a flow", json={"name": "locked-probe"}).json()
    proxy.fault = ("POST", re.compile(r"^/api/flow_runs/$"))

    run = client._request("POST", "flow_runs/", "a flow run", json={
        "flow_id": flow["id"], "state": {"type": "COMPLETED", "name": "Completed"}}).json()

    assert proxy.went_through("POST", r"^/api/flow_runs/$", ok=(201,)), proxy.seen
    assert client.flow_run(run["id"]).state == "COMPLETED"
    client._request("DELETE", f"flow_runs/{run['id']}", "a clean-up", ok=(200, 204))


def test_an_unknown_run_is_refused_without_waiting(site, proxy):
    client = PrefectApi(f"http://127.0.0.1:{proxy.port}/api", auth=site.prefect_auth())

    with pytest.raises(ResumeRefused, match="does not know it"):
        client.resume("00000000-0000-4000-8000-000000000000")
    assert len(proxy.hits("POST", r"/resume$")) == 1


def test_two_sites_never_register_their_blocks_at_once(site, monkeypatch):
    """Prefect keeps a block class's ids in class variables: two registrations side by side in
    one process (sites started in parallel) would save one site's blocks with the other
    server's ids, which CI saw as a 500 from a site's Prefect. They take turns."""
    import contextlib
    import time
    from concurrent.futures import ThreadPoolExecutor

    from radflow.site import registration

    inside, most = [0], [0]
    real = registration.site_prefect

    @contextlib.contextmanager
    def counted(ctx):
        with real(ctx):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.3)  # long enough for the other thread to try
            try:
                yield
            finally:
                inside[0] -= 1

    monkeypatch.setattr(registration, "site_prefect", counted)
    monkeypatch.setattr("prefect.events.utilities.should_emit_events", lambda: False)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: registration.register_site_blocks(site), range(2)))
    assert most[0] == 1
