"""Session fixtures: a real site (Orthanc from Debian's package + a Prefect server + a worker)
on free loopback ports under a temporary RADFLOW_HOME, and synthetic data."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from radflow.service import restore_sigint
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.site.components import SiteContext

RADFLOW = [str(Path(sys.executable).parent / "radflow")]

# pytest run as a script's background job (`nohup make test &`) has SIGINT ignored, and so would
# every site it starts in-process: their stops would wait out SIGINT's 20 s (see restore_sigint)
restore_sigint()


@pytest.fixture(scope="session")
def radflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private RADFLOW_HOME for the whole session (also for CLI subprocesses)."""
    home = tmp_path_factory.mktemp("radflow-home")
    old = os.environ.get("RADFLOW_HOME")
    os.environ["RADFLOW_HOME"] = str(home)
    # every catalog keeps its columnar copy (radflow.cohorts.columns), not only big ones, so that
    # the sites' cohort queries in these tests are answered from it wherever it is current
    os.environ.setdefault("RADFLOW_COLUMNS_FROM", "1")
    # the sites' ingest runs wait for the next test's studies (up to the flow's 15 minutes)
    # instead of ending after 30 s: a send then costs no new flow-run process
    os.environ.setdefault("RADFLOW_INGEST_IDLE_SECONDS", "900")
    yield home
    if old is None:
        os.environ.pop("RADFLOW_HOME", None)
    else:
        os.environ["RADFLOW_HOME"] = old


@pytest.fixture(scope="session")
def manager(radflow_home: Path) -> SiteManager:
    return SiteManager(RadflowSettings(home=radflow_home))


@contextmanager
def reported(request: pytest.FixtureRequest, what: str) -> Iterator[None]:
    """Time a slow step of a fixture and print it past pytest's capture: a CI log then says
    where a set-up's or teardown's minutes go (``--durations`` gives only their sum)."""
    began = time.monotonic()
    try:
        yield
    finally:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n[{what}: {time.monotonic() - began:.1f} s]", flush=True)


@pytest.fixture(scope="session")
def site(manager: SiteManager, request: pytest.FixtureRequest) -> Iterator[SiteContext]:
    """The session's site 'alpha', fully up; stopped at the end of the session."""
    manager.up("alpha", stable_age=2)
    yield manager.context("alpha")
    for name in manager.sites():  # also sites a failed test may have left running
        with reported(request, f"site {name} down"):
            manager.down(name)


@pytest.fixture()
def orthanc(site: SiteContext):
    """A client for the session site's Orthanc, emptied before the test."""
    client = site.orthanc_client()
    for patient in client.patients():
        client.delete("patients", patient)
    return client


@pytest.fixture(scope="session")
def postgres() -> Iterator:
    """A PostgreSQL cluster (Debian's package) in a temporary folder on a loopback port, for the
    whole session; removed afterwards."""
    from radflow.postgres import TemporaryCluster

    with TemporaryCluster() as cluster:
        yield cluster


ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


_databases = itertools.count()


def new_database(request: pytest.FixtureRequest, engine: str, folder: Path, name: str) -> str:
    """A new, empty database on ``engine`` (``sqlite``: a file in ``folder``; ``postgresql``: a
    database in the session's cluster); its SQLAlchemy URL."""
    from radflow.postgres import sync_url

    if engine == "sqlite":
        return f"sqlite:///{folder / f'{name}.db'}"
    cluster = request.getfixturevalue("postgres")
    return sync_url(cluster.create_database(f"{name}_{next(_databases)}"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small synthetic CT studies (64x64 slices), shared by the session."""
    from radflow.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, 3, seed=7, matrix=64)
    return out


@pytest.fixture(scope="session")
def cli():
    """Run the `radflow` command in a subprocess: ``cli("site", "status", check=True)``."""
    return run_cli


def run_cli(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `radflow` command in a subprocess (inherits RADFLOW_HOME)."""
    proc = subprocess.run([*RADFLOW, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"radflow {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_settled(site: SiteContext, timeout: float = 180) -> dict:
    """Wait until the watcher and ingest runs have brought the catalog in step with Orthanc.
    A test's studies are all in Orthanc when it waits (send() returns once Orthanc holds every
    instance), so one quiet second is enough (`catalog wait` gives a sender three)."""
    from radflow.catalog.sync import wait_in_step

    return wait_in_step(site.orthanc_client(), site.catalog_url, timeout=timeout,
                        quiet_seconds=1.0)


DCIODVFY = Path(sys.executable).parent / "dciodvfy"


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """The errors and warnings dciodvfy (dicom3tools) reports for a DICOM file."""
    out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return ([line for line in lines if line.startswith("Error")],
            [line for line in lines if line.startswith("Warning")])


def one_study_catalog(url: str):
    """A catalog (at ``url``) holding one patient with one study; returns the study's row id."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Patient, Study

    with session_scope(url) as session:
        patient = Patient(orthanc_id="p")
        session.add(patient)
        session.flush()
        study = Study(orthanc_id="st", study_uid="1", patient_pk=patient.id)
        session.add(study)
        session.flush()
        return study.id


def send(site: SiteContext, *paths: Path):
    """C-STORE files or folders to the session site (the way a PACS would)."""
    from radflow.data.push import push

    return push(list(paths), client=site.orthanc_client(), host="127.0.0.1",
                port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub's federation API under a real uvicorn on loopback (a thread of the test process),
    with its own signing key and database."""
    from sqlmodel import create_engine

    folder = tmp_path_factory.mktemp("hub")
    with serving_hub(folder, create_engine(f"sqlite:///{folder / 'hub.db'}")) as served:
        yield served


@contextmanager
def serving_hub(folder: Path, engine) -> Iterator[dict]:
    """The hub's federation API on ``engine`` (its database), served on a free loopback port
    by a thread of this process; every request body it receives is kept."""
    import threading

    import requests
    import uvicorn

    from radflow.federation.signing import generate
    from radflow.hub.api import create_app

    generate(folder / "hub.key")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(engine, folder / "hub.key", url)
    bodies: list[bytes] = []

    async def recorder(scope, receive, send):  # every request body the hub receives
        async def receive_and_keep():
            message = await receive()
            if message.get("type") == "http.request" and message.get("body"):
                bodies.append(message["body"])
            return message

        await app(scope, receive_and_keep, send)

    server = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    try:
        yield {"url": url, "engine": engine, "folder": folder, "app": app, "bodies": bodies}
    finally:
        server.should_exit = True
        thread.join(10)


class Webhook:
    """A webhook receiver on loopback (a chat or paging service's, say): keeps every JSON body
    POSTed to it (``received``)."""

    def __init__(self) -> None:
        import http.server
        import threading

        received: list[dict] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((b for b in list(self.received) if predicate(b)), None)
            if found is not None:
                return found
            time.sleep(0.5)
        return None

    def close(self) -> None:
        self.server.shutdown()


class RecordingProxy:
    """A reverse proxy on loopback in front of a hub (the way a TLS front end would sit),
    keeping every request body it forwards: what the hub received, for the leak tests."""

    def __init__(self, target: str) -> None:
        import threading

        import httpx
        import uvicorn

        self.target = target.rstrip("/")
        self.bodies: list[bytes] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        client = httpx.AsyncClient(timeout=120)

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if body:
                self.bodies.append(body)
            headers = [(k.decode(), v.decode()) for k, v in scope["headers"]
                       if k.lower() not in (b"host", b"content-length")]
            query = scope.get("query_string", b"").decode()
            answer = await client.request(scope["method"], self.target + scope["path"]
                                          + (f"?{query}" if query else ""),
                                          headers=headers, content=body)
            await send({"type": "http.response.start", "status": answer.status_code,
                        "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()
                                    if k.lower() not in ("content-length",
                                                         "transfer-encoding",
                                                         "content-encoding")]})
            await send({"type": "http.response.body", "body": answer.content})

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def distinctive_patient(source: Path, out: Path, tag: str) -> dict[str, str]:
    """A copy of one synthetic series as a patient with names, IDs, UIDs and descriptions that
    appear nowhere else (for the leak tests); returns those strings."""
    import pydicom
    from pydicom.uid import generate_uid

    strings = {"PatientName": f"Quetzalcoatl^{tag}Zanzibar", "PatientID": f"MRN{tag}80417",
               "StudyDescription": f"Leakcheck {tag} abdomen", "AccessionNumber": f"ACC{tag}931",
               "SeriesDescription": f"Leakcheck {tag} portal venous",
               "StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in strings.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / path.name)
    return strings


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by Playwright (headless)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (installs Debian's chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


CSP_VIOLATIONS: list[str] = []


def watch_csp(context, origin: str) -> None:
    """Keep what a browser context's console says against the Content-Security-Policy on the
    pages of ``origin`` (the provider's pages are not radflow's); the autouse fixture
    ``no_csp_violations`` fails the test during which any was said."""
    def seen(message) -> None:
        if "Content Security Policy" in message.text and \
                (message.location.get("url") or origin).startswith(origin):
            CSP_VIOLATIONS.append(f"{message.location.get('url')}: {message.text}")

    context.on("console", seen)


@pytest.fixture(autouse=True)
def no_csp_violations() -> Iterator[None]:
    CSP_VIOLATIONS.clear()
    yield
    assert CSP_VIOLATIONS == [], "a page broke its Content-Security-Policy"


@pytest.fixture()
def shots(tmp_path) -> Path:
    """Where screenshots go: $RADFLOW_SCREENSHOTS (docs/images for the guides), else tmp."""
    folder = Path(os.environ.get("RADFLOW_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def catalog_secrets(ctx: SiteContext) -> set[str]:
    """Every UID, Orthanc id and series description in a site's catalog: strings that must
    never reach a hub (the leak tests)."""
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Series

    found: set[str] = set()
    with session_scope(ctx.catalog_url) as session:
        for row in session.exec(select(Series)):
            found |= {row.series_uid, row.study_uid, row.orthanc_id}
            if row.series_description:
                found.add(row.series_description)
    return found
