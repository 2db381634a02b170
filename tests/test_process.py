"""A site's processes, tracked by PID files: a process is known by its PID and its start in
clock ticks since boot, so a step of the wall clock (NTP, a virtual machine resumed) loses
none of them, and a PID taken by another process is never signalled."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import time

import pytest

from radflow.site.process import ManagedProcess, start_ticks


def test_a_wall_clock_step_loses_no_process(tmp_path) -> None:
    proc = ManagedProcess("sleeper", tmp_path, tmp_path / "sleeper.log")
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)"], {})
    try:
        info = json.loads(proc.pidfile.read_text())
        assert info["start_ticks"] == start_ticks(pid)
        # the boot time moved by 100 s since the file was written: the wall-clock start time
        # psutil reports now differs, the start in ticks does not
        proc.pidfile.write_text(json.dumps(info | {"create_time": info["create_time"] - 100}))
        assert proc.process() is not None and proc.process().pid == pid
        # another process under this PID (another start): not ours, and never signalled
        proc.pidfile.write_text(json.dumps(info | {"start_ticks": info["start_ticks"] - 1}))
        assert proc.process() is None and proc.died()
        proc.pidfile.write_text(json.dumps(info))
        assert proc.stop(timeout=10)
        assert start_ticks(pid) is None or proc.process() is None
    finally:
        proc.stop(timeout=10)


def _sigint_ignored(pid: int | str = "self") -> bool:
    """Whether SIGINT (signal 2, bit 1 of the mask) is ignored by a process."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


def _service(restore: bool) -> list[str]:
    """A Python service started as a script's background job starts it: SIGINT ignored. It
    prints whether a process it starts ignores SIGINT, then waits to be stopped."""
    code = ("import subprocess, sys, time\n"
            + ("from radflow.service import restore_sigint; restore_sigint()\n" if restore else "")
            + "print('child-ignores-sigint', subprocess.run(['grep', 'SigIgn', '/proc/self/status'],"
            " capture_output=True, text=True).stdout.split()[1], flush=True)\n"
            "time.sleep(120)\n")
    return ["bash", "-c", f"trap '' INT; exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"]


@pytest.mark.parametrize("restore", [False, True], ids=["as-started", "restore_sigint"])
def test_a_service_started_with_sigint_ignored_stops_on_sigint(tmp_path, caplog, restore) -> None:
    """`radflow site up &` in a script (or pytest under nohup) starts the services with SIGINT
    ignored; ManagedProcess.stop sends SIGINT first and escalates to SIGTERM only after its
    timeout, which made every site's shutdown wait 20 s per service. restore_sigint (called by
    every site service and by the CLI) brings SIGINT back, for the service and what it starts."""
    proc = ManagedProcess("service", tmp_path, tmp_path / "service.log")
    pid = proc.start(_service(restore), {"PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 30
        while "child-ignores-sigint" not in proc.log_path.read_text():
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.1)
        assert _sigint_ignored(pid) is not restore
        child_mask = proc.log_path.read_text().split("child-ignores-sigint")[1].split()[0]
        assert bool(int(child_mask, 16) & (1 << (signal.SIGINT - 1))) is not restore
        with caplog.at_level(logging.WARNING, logger="radflow.site.process"):
            assert proc.stop(timeout=3)
        escalated = [r.getMessage() for r in caplog.records if "did not stop on SIGINT" in r.getMessage()]
        assert bool(escalated) is not restore, escalated
        assert proc.process() is None
    finally:
        proc.stop(timeout=3)
