"""The warm start of flow runs (radflow.forkserver and its client): a run forked from the
server behaves, to the worker that started its client, as the run's own process would.

These run a real server and real clients, with a stand-in for the worker (``sleep``) and small
modules in place of ``prefect.engine``; the session site's flow runs go through it for real
(the last test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from radflow.forkserver import warm_command

CLIENT = Path(__file__).parents[1] / "radflow" / "forkclient.py"

RUN = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    out = Path(os.environ["RUN_OUT"])
    (out / "pid").write_text(str(os.getpid()))
    print("out:", os.environ["RUN_TOKEN"], os.getcwd(), flush=True)
    print("err:", sys.argv[0], file=sys.stderr, flush=True)
    mode = os.environ.get("RUN_MODE", "exit")
    if mode == "exit":
        sys.exit(int(os.environ.get("RUN_CODE", "0")))
    if mode == "term":
        def stop(signum, frame):
            (out / "term").write_text("got SIGTERM")
            sys.exit(3)
        signal.signal(signal.SIGTERM, stop)
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "sigint":  # how the run takes a site's stop
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        sys.exit(9 if ignored else 0)
    (out / "ready").write_text("")
    time.sleep(60)
""")


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fork server whose "worker" is a sleep; its log and socket."""
    root = tmp_path_factory.mktemp("fork")
    modules = root / "modules"
    modules.mkdir()
    (modules / "fake_run.py").write_text(RUN)
    # a socket path longer than an AF_UNIX address holds: both sides bind/connect by name
    sock = root / ("d" * 120) / "run" / "forkserver.sock"
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "radflow.forkserver", "--socket", str(sock),
                             "--", "sleep", "600"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_for(lambda: "serving" in (root / "server.log").read_text(), 60, "the server to serve")
    yield {"socket": sock, "log": root / "server.log", "modules": modules, "root": root}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    log.close()


def client(server, tmp_path, mode="exit", socket_path=None, **env):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    environ = {"PATH": os.environ["PATH"], "PYTHONPATH": str(server["modules"]),
               "RUN_OUT": str(out), "RUN_TOKEN": "token-123", "RUN_MODE": mode, **env}
    cwd = tmp_path / "work"
    cwd.mkdir(exist_ok=True)
    argv = [sys.executable, "-S", "-I", str(CLIENT), str(socket_path or server["socket"]),
            "fake_run"]
    return subprocess.Popen(argv, env=environ, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True), out


def forked(server, pid: int) -> bool:
    return f"run {pid} forked (fake_run)" in server["log"].read_text()


def test_a_run_gets_the_clients_stdio_environment_directory_and_exit_code(server, tmp_path):
    proc, out = client(server, tmp_path, RUN_CODE="7")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 7, stderr
    assert f"out: token-123 {tmp_path / 'work'}" in stdout
    assert "err:" in stderr and "fake_run.py" in stderr
    pid = int((out / "pid").read_text())
    assert pid != proc.pid and forked(server, pid)  # forked by the server, not run by the client


def test_a_sigterm_to_the_client_reaches_the_run(server, tmp_path):
    proc, out = client(server, tmp_path, mode="term")
    wait_for(lambda: (out / "ready").exists(), what="the run to start")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert (out / "term").read_text() == "got SIGTERM"
    assert proc.returncode == 3


def test_a_killed_client_takes_its_run_with_it(server, tmp_path):
    proc, out = client(server, tmp_path, mode="sleep")
    wait_for(lambda: (out / "ready").exists(), what="the run to start")
    run_pid = int((out / "pid").read_text())
    proc.kill()
    proc.wait(10)

    def gone() -> bool:
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            return True
        return False
    wait_for(gone, 10, "the run to be killed")


def test_a_run_killed_by_a_signal_ends_its_client_by_that_signal(server, tmp_path):
    proc, _ = client(server, tmp_path, mode="die")
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_without_a_server_the_client_starts_the_run_cold(server, tmp_path):
    proc, out = client(server, tmp_path, socket_path=tmp_path / "none" / "forkserver.sock",
                       RUN_CODE="5")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, stderr
    assert "out: token-123" in stdout
    assert int((out / "pid").read_text()) == proc.pid  # the client became the run


def test_a_server_that_cannot_fork_lets_the_run_start_cold(tmp_path, monkeypatch):
    """fork() failing (no memory or process left) costs that run its warm start, not the server
    (nor, through it, the worker); the run started cold still takes a stop's SIGINT."""
    import errno
    import threading

    from radflow import forkserver

    sock_path = tmp_path / "run" / "forkserver.sock"
    worker = subprocess.Popen(["sleep", "60"])
    server = forkserver.Server(forkserver.listen(sock_path), worker, forkserver.Signals(worker))

    def no_fork():
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(forkserver.serve.os, "fork", no_fork)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    try:
        fake = {"socket": sock_path, "modules": tmp_path / "modules"}
        fake["modules"].mkdir()
        (fake["modules"] / "fake_run.py").write_text(RUN)
        proc, out = client(fake, tmp_path, mode="sigint")
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, (proc.returncode, stderr)  # (9: SIGINT ignored)
        assert int((out / "pid").read_text()) == proc.pid  # the client became the run
        assert serving.is_alive() and worker.poll() is None and not server.runs
    finally:
        worker.kill()
        serving.join(10)
    assert not serving.is_alive()


WORKER = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    seen = Path(sys.argv[1])
    def count(signum, frame):
        seen.write_text(seen.read_text() + "INT ")
    signal.signal(signal.SIGINT, count)
    seen.write_text("")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not seen.read_text():
        time.sleep(0.05)
    time.sleep(1)  # a second SIGINT would come now (Prefect's CLI kills its worker on one)
""")


def test_a_stop_signals_the_worker_once(tmp_path):
    """A site's stop signals the component's process group: the worker under the server gets
    that SIGINT and no copy from the server (a Prefect worker's CLI kills its worker on a
    second one)."""
    from radflow.site.process import ManagedProcess

    (tmp_path / "worker.py").write_text(WORKER)
    seen = tmp_path / "seen"
    proc = ManagedProcess("worker", tmp_path / "run", tmp_path / "worker.log")
    proc.start([sys.executable, "-m", "radflow.forkserver", "--socket",
                str(tmp_path / "run" / "forkserver.sock"), "--", sys.executable,
                str(tmp_path / "worker.py"), str(seen)], dict(os.environ))
    wait_for(lambda: "serving" in (tmp_path / "worker.log").read_text(), 60, "the server")
    assert proc.stop(timeout=20) is True
    assert seen.read_text() == "INT "
    assert "worker ended (0)" in (tmp_path / "worker.log").read_text()  # not by an escalation


def test_the_socket_is_the_users_only(server):
    assert (server["socket"].stat().st_mode & 0o777) == 0o600


def test_a_sites_flow_runs_are_forked_warm(site, synth_dir):
    """The session site's worker runs under the server, its deployments start through the
    client, and an ingest run is forked by it and completes."""
    from conftest import send, wait_settled

    from radflow.forkserver import SOCKET_NAME

    send(site, synth_dir / "case_000")
    wait_settled(site)
    log = (site.paths.logs / "worker.log").read_text()
    assert f"serving {site.paths.run / SOCKET_NAME}" in log
    assert " forked (prefect.engine)" in log
    assert "found in sys.modules" not in log  # the child ran the engine without runpy's warning
    api = site.prefect()
    deployment = api._request("GET", f"deployments/{api.deployment_id(f'ingest/{site.config.name}')}",
                              "reading the ingest deployment").json()
    assert deployment["job_variables"]["command"] == warm_command(site.paths.run / SOCKET_NAME)
