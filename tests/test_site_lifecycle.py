"""`radflow site up/status/down` with real processes: side by side, no orphans, clean failure."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time

import psutil
import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]


def family(pids: list[int]) -> set[int]:
    """The PIDs and all their descendants."""
    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found |= {pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.add(pid)
        except psutil.NoSuchProcess:
            pass
    return living


def ports_of(status: dict) -> set[str]:
    return {url.rsplit(":", 1)[-1].split("/")[0] for c in status["components"]
            for key, url in c["urls"].items() if key in ("rest", "dicom", "api", "issuer",
                                                          "worklist")}


def test_second_site_runs_beside_the_first_and_stops_without_orphans(site, manager, cli) -> None:
    up = cli("site", "up", "--site", "beta", "--json", check=True)
    beta = json.loads(up.stdout)
    assert beta["state"] == "running"
    assert [c["name"] for c in beta["components"]] == ["orthanc", "prefect-server", "worker",
                                                       "watcher", "idp", "worklist", "reviews",
                                                       "supervisor"]

    alpha = json.loads(cli("site", "status", "--site", "alpha", "--json", check=True).stdout)
    assert alpha["state"] == "running"
    assert ports_of(alpha).isdisjoint(ports_of(beta)) and len(ports_of(beta)) == 5
    everything = json.loads(cli("site", "status", "--json", check=True).stdout)
    assert {s["name"] for s in everything} >= {"alpha", "beta"}

    # both Prefect databases began as copies of one template (radflow.prefect_db); each
    # server made its own key for its block documents (the sites' secrets)
    keys = {}
    for name in ("alpha", "beta"):
        db = manager.context(name).paths.prefect_home / "prefect.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            keys[name] = connection.execute(
                "SELECT value FROM configuration WHERE key = 'ENCRYPTION_KEY'").fetchall()
    assert len(keys["alpha"]) == len(keys["beta"]) == 1 and keys["alpha"] != keys["beta"]

    again = json.loads(cli("site", "up", "--site", "beta", "--json", check=True).stdout)
    assert [c["pid"] for c in again["components"]] == [c["pid"] for c in beta["components"]]

    # a component killed outright comes back by itself (the supervisor), and is counted
    killed = {}
    for name in ("watcher", "worker", "orthanc"):
        pid = next(c["pid"] for c in beta["components"] if c["name"] == name)
        psutil.Process(pid).kill()
        killed[name] = pid
        back = wait_back(cli, name, pid)
        assert back["state"] == "running" and back["restarts"] == 1, back
    status = json.loads(cli("site", "status", "--site", "beta", "--json", check=True).stdout)
    assert {c["name"]: c["restarts"] for c in status["components"]} == {
        "orthanc": 1, "prefect-server": 0, "worker": 1, "watcher": 1, "idp": 0, "worklist": 0,
        "reviews": 0, "supervisor": 0}
    log = (manager.context("beta").paths.logs / "supervisor.log").read_text()
    assert "watcher died; starting it again in 1 s" in log and "worker is back (restart 1)" in log
    shown = cli("site", "status", "--site", "beta", check=True).stdout
    assert "restarted 1 time" in shown
    # a restart asked for is no death
    cli("site", "restart", "--site", "beta", "-c", "watcher", check=True)
    status = json.loads(cli("site", "status", "--site", "beta", "--json", check=True).stdout)
    assert next(c for c in status["components"] if c["name"] == "watcher")["restarts"] == 1

    pids = family([c["pid"] for c in status["components"]])
    assert len(pids) >= 4
    down = cli("site", "down", "--site", "beta", check=True)
    stopped = set(down.stdout.split("stopped ")[1].strip().split(", "))
    assert stopped == {"watcher", "worker", "reviews", "prefect-server", "orthanc", "idp",
                       "worklist", "supervisor"}
    assert alive(pids) == set()
    time.sleep(3)  # nothing comes back after a clean stop
    assert manager.status("beta").state == "stopped"

    after = cli("site", "status", "--site", "beta", "--json")
    assert after.returncode == 1
    assert json.loads(after.stdout)["state"] == "stopped"
    assert manager.status("alpha").state == "running"  # the other site is untouched


def wait_back(cli, name: str, old_pid: int, timeout: float = 90) -> dict:
    """The component's status once it runs again under another PID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(cli("site", "status", "--site", "beta", "--json").stdout)
        part = next(c for c in status["components"] if c["name"] == name)
        if part["pid"] not in (None, old_pid) and part["state"] == "running":
            return part
        time.sleep(1)
    raise AssertionError(f"{name} did not come back within {timeout} s: {part}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_half_started_site_is_reported_and_cleaned_up(manager, cli) -> None:
    """Prefect cannot reach its database: the error names the component and its cause, and
    Orthanc (already started) is stopped again."""
    url = f"postgresql+asyncpg://radflow:pw@127.0.0.1:{free_port()}/prefect"
    out = cli("site", "up", "--site", "gamma", "--database-url", url)
    assert out.returncode == 1
    assert "prefect-server exited during start-up" in out.stderr
    assert "Connect call failed" in out.stderr
    assert "Stopped again: orthanc" in out.stderr
    assert "pw@" not in out.stdout + out.stderr  # the database password is never shown
    status = manager.status("gamma")
    assert status.state == "stopped"
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any("sites/gamma" in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []


def test_busy_port_is_named_with_the_option_to_change_it(manager, cli) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("site", "up", "--site", "delta", "--orthanc-http-port", str(port))
    assert out.returncode == 1
    assert f"port {port}" in out.stderr and "--orthanc-http-port" in out.stderr
    assert manager.status("delta").state == "stopped"


def test_status_of_an_unknown_site_says_how_to_create_it(radflow_home, cli) -> None:
    out = cli("site", "status", "--site", "nosuch")
    assert out.returncode == 1
    assert "there is no site 'nosuch'" in out.stderr
    assert "radflow site up --site nosuch" in out.stderr
    assert "Traceback" not in out.stderr
