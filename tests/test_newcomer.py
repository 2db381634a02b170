"""The newcomer's path: what a new user types (`make demo`, then `make demo-down`) in a fresh
home with no RADFLOW_HOME, both parts of the demo (a site; then a hub, a second site and two
cross-site studies). Everything lands under ``$HOME/.radflow``, nothing in the checkout, and
`make demo-down` leaves no process behind. This is the CI's run of `make demo`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlmodel import col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import IngestRequest, Series
from radflow.errors import SiteError
from radflow.hub.home import HubHome
from radflow.hub.services import HubServices
from radflow.settings import RadflowSettings
from radflow.site import SiteManager
from radflow.site.process import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
RADFLOW = str(REPO / ".venv" / "bin" / "radflow")


def newcomer_env(home: Path) -> dict[str, str]:
    """The test's environment as a new user's: HOME is ``home``, and nothing of radflow's or
    Prefect's is set. PATH and PYENV_ROOT stay: pyenv's shims (python3.11 in scripts/setup.sh,
    python3 in the demo scripts) find their Pythons through PYENV_ROOT, which otherwise defaults
    to $HOME/.pyenv, and the fresh HOME has none."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RADFLOW_", "PREFECT_", "PYTEST_"))}
    if "PYENV_ROOT" not in env and (Path.home() / ".pyenv").is_dir():
        env["PYENV_ROOT"] = str(Path.home() / ".pyenv")  # pyenv's default, under the real HOME
    env["HOME"] = str(home)
    return env


def checkout_state() -> set[str]:
    """What git sees in the checkout, ignored files included, less Python's bytecode caches
    (written beside any module that runs; they are no state of radflow's)."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "__pycache__/" not in line}


def processes_of(home: Path) -> list[str]:
    """PID and command line of every process whose environment has HOME=``home``."""
    found = []
    marker = f"HOME={home}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(f"{proc.name}: " + (proc / "cmdline").read_bytes()
                             .replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_the_default_home_is_absolute(tmp_path, monkeypatch) -> None:
    """No RADFLOW_HOME: the home is $HOME/.radflow, expanded, for every consumer (the hub's
    folder used to be a folder named `~` in the current directory)."""
    monkeypatch.delenv("RADFLOW_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    settings = RadflowSettings()
    assert settings.home == settings.home_dir == tmp_path / ".radflow"
    assert HubHome.of(settings.home).root == tmp_path / ".radflow" / "hub"
    monkeypatch.setenv("RADFLOW_HOME", "relative/home")
    assert RadflowSettings().home == tmp_path / "relative" / "home"


def test_a_port_taken_during_start_up_is_the_reason_given(tmp_path) -> None:
    """Another program took the port between its choice and the server's start: the error names
    that, not the exception the server's shutdown raises after it (seen in `make demo`)."""
    log = tmp_path / "prefect-server.log"
    log.write_text("Check out the dashboard at http://127.0.0.1:4205\n"
                   "14:36:27.604 | ERROR   | uvicorn.error - [Errno 98] error while attempting to "
                   "bind on address ('127.0.0.1', 4205): address already in use\n"
                   "Traceback (most recent call last):\n"
                   "AssertionError: Reactive triggers not started\nServer stopped!\n")
    reason = ManagedProcess("prefect-server", tmp_path, log).last_error()
    assert "address already in use" in reason and "4205" in reason
    log.write_text("Traceback (most recent call last):\nValueError: bad setting\nbye\n")
    assert ManagedProcess("prefect-server", tmp_path, log).last_error() == "ValueError: bad setting"


def test_a_new_hub_takes_free_ports_and_refuses_a_taken_one(tmp_path) -> None:
    """Another program holds the port after the API's: a new hub takes the next free one, keeps
    its choice, and refuses to start a server on a port that was taken since (another hub's
    server would answer its health checks)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        hub = HubHome(tmp_path / "hub")
        config = hub.make(busy - 10, None)
        assert config["port"] == busy - 10 and config["prefect_port"] > busy
        ports = [config[k] for k in ("port", "prefect_port", "web_port", "idp_port")]
        assert len(set(ports)) == 4 and busy not in ports
        assert hub.make(None, None)["prefect_port"] == config["prefect_port"]  # kept
        config["prefect_port"] = busy
        hub.config_file.write_text(json.dumps(config))
        with pytest.raises(SiteError, match=f"port {busy} for the hub's prefect-server") as taken:
            HubServices(hub).up("127.0.0.1", None, None)
        assert "radflow hub up --prefect-port N" in taken.value.fix


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(2400)
def test_make_demo_in_a_fresh_home(tmp_path) -> None:
    home = tmp_path / "newcomer"
    home.mkdir()
    env = newcomer_env(home)
    state = home / ".radflow"
    before = checkout_state()
    log = tmp_path / "demo.log"
    began = time.monotonic()
    with open(log, "w") as out:
        demo = subprocess.run(["make", "demo"], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=2100, check=False)
    took = time.monotonic() - began
    print(f"make demo in a fresh home: {took / 60:.1f} min")  # shown with pytest -s
    output = log.read_text(errors="replace")

    def radflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RADFLOW, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    try:
        assert demo.returncode == 0, f"make demo failed ({demo.returncode}):\n{output[-12000:]}"
        assert "The hub and two sites are running" in output, output[-12000:]
        for site in ("demo", "demo-b"):
            status = radflow("site", "status", "--site", site, "--json")
            assert status.returncode == 0, f"{site}: {status.stdout}{status.stderr}"
            parts = {c["name"]: c["state"] for c in json.loads(status.stdout)["components"]}
            assert parts.get("agent") == "running", parts  # joined, and its agent runs
        hub = radflow("hub", "status", "--json")
        assert hub.returncode == 0, hub.stdout + hub.stderr
        assert {s["name"]: s["status"] for s in json.loads(hub.stdout)["sites"]} == \
            {"demo": "enrolled", "demo-b": "enrolled"}
        # the study results: both studies completed with both sites' releases
        studies = json.loads(radflow("study", "list", "--json").stdout)
        assert sorted(s["flow"] for s in studies) == ["federated-cohort-count",
                                                      "federated-feature-statistics"]
        assert all(s["state"] == "finished" for s in studies), studies
        for study in studies:
            shown = json.loads(radflow("study", "show", study["study"], "--json").stdout)
            assert {s["site"]: s["status"] for s in shown["sites"]} == \
                {"demo": "released", "demo-b": "released"}, shown
        count = next(s for s in studies if s["flow"] == "federated-cohort-count")
        assert json.loads(radflow("study", "show", count["study"], "--json").stdout)[
            "combined"]["matching"] == 10  # 5 patients at each site
        results = json.loads(radflow("results", "list", "--site", "demo", "--json").stdout)
        assert len(results) == 10  # a SEG and an SR for each of the 5 studies
        # `data push` asked for its series at once; Orthanc's StableSeries, the default stable
        # age (10 s) later, found each requested in the same state and added nothing
        with session_scope(SiteManager(RadflowSettings(home=state)).context("demo")
                           .catalog_url) as session:
            pushed = session.exec(select(Series.orthanc_id).where(Series.modality == "CT")).all()
            reasons = session.exec(select(IngestRequest.reason).where(
                col(IngestRequest.series_orthanc_id).in_(pushed))).all()
        assert len(pushed) == 5 and sorted(reasons) == ["pushed"] * 5, reasons
        # the state is under $HOME/.radflow, and nothing new is in the checkout
        assert {p.name for p in (state / "sites").iterdir()} == {"demo", "demo-b"}
        assert (state / "hub" / "secrets.json").is_file()
        assert (state / "demo-data" / "manifest.json").is_file()
        assert not (REPO / "~").exists()
        assert checkout_state() == before, f"new in the checkout: {checkout_state() - before}"
    finally:
        down = subprocess.run(["make", "demo-down"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    for site in ("demo", "demo-b"):
        stopped = json.loads(radflow("site", "status", "--site", site, "--json").stdout)
        assert stopped["state"] == "stopped", stopped
    assert json.loads(radflow("hub", "status", "--json").stdout)["state"] == "stopped"
    deadline = time.monotonic() + 30
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.5)  # a stopped process may take a moment to be reaped
    assert not left, "left running after make demo-down:\n" + "\n".join(left)
