"""Start and stop the long-running processes of a site, tracked by PID files.

Each process starts in a session of its own (its own process group), so stopping it also
stops whatever it spawned (uvicorn under ``prefect server start``, flow-run processes under a
worker). A PID file records the process's start time as well as its PID, so a PID reused by an
unrelated process after a reboot is never signalled. The start time compared is the kernel's,
in clock ticks since boot (``/proc/PID/stat``): the wall-clock start time that psutil reports is
boot time + ticks, and the boot time moves whenever the wall clock is set (NTP, a virtual
machine resumed): a process judged by it looked gone after each such step, and was then
neither stopped by `site down` nor kept from being started twice by the supervisor.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)
# a start-up log's telling lines: a Python exception, or an Orthanc error (E0123 ...)
_ERROR_LINE = re.compile(r"^([\w.]+(Error|Exception)\b|[EF]\d{4} )")


@dataclass
class ManagedProcess:
    """One supervised process of a site.

    Attributes:
        name: component name (``orthanc``, ``prefect-server``, ``worker``...).
        run_dir: folder for the PID file.
        log_path: where the process's stdout and stderr go (appended).
        stop_signal: the signal that makes it shut down cleanly (Prefect workers ignore SIGTERM
            for a long time; SIGINT stops them at once).
    """

    name: str
    run_dir: Path
    log_path: Path
    stop_signal: int = signal.SIGINT
    stop_children: bool = True  # the supervisor's children are components: they stop on their own

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def died_marker(self) -> Path:
        """Left where the PID file was when the process ended without a clean stop."""
        return self.run_dir / f"{self.name}.died"

    def died(self) -> bool:
        """Whether the process ended without being stopped (crashed, killed) since it was last
        started."""
        return self.process() is None and self.died_marker.exists()

    def mark_died(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.died_marker.touch()

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        """Start the process in the background; returns its PID."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.died_marker.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- radflow: starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=0o077,  # its databases, logs and files: the owner's only
            )
        create_time = psutil.Process(proc.pid).create_time()
        self.pidfile.write_text(json.dumps({"pid": proc.pid, "create_time": create_time,
                                            "start_ticks": start_ticks(proc.pid),
                                            "argv": list(argv)[:3]}))
        # A Popen object reaps its child only when polled; keep none around: once started the
        # process belongs to the site, not to this (possibly short-lived) CLI process.
        proc.returncode = 0
        return proc.pid

    def process(self) -> psutil.Process | None:
        """The running process, or None. A PID file whose process is gone becomes the died
        marker (a clean stop removes the PID file first)."""
        try:
            info = json.loads(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            proc = psutil.Process(info["pid"])
            if not _same_start(proc, info):
                raise psutil.NoSuchProcess(info["pid"])
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(info["pid"])
                raise psutil.NoSuchProcess(info["pid"])
            return proc
        except psutil.NoSuchProcess:
            try:
                self.pidfile.replace(self.died_marker)
            except FileNotFoundError:  # another caller saw it first
                pass
            return None

    @property
    def pid(self) -> int | None:
        proc = self.process()
        return proc.pid if proc else None

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process and everything it spawned. Returns True if something was running."""
        proc = self.process()
        self.died_marker.unlink(missing_ok=True)
        if proc is None:
            return False
        try:
            family = [proc, *(proc.children(recursive=True) if self.stop_children else ())]
        except psutil.NoSuchProcess:
            family = [proc]
        for sig, wait in ((self.stop_signal, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            _signal_group(proc.pid, sig)
            for member in family[1:]:  # children that left the group (not twice to the others:
                if _group(member) != proc.pid:  # a Prefect worker takes a second SIGINT as kill)
                    _signal(member, sig)
            alive = _wait_gone(family, wait)
            _reap(proc.pid)
            if not alive:
                break
            logger.warning("%s did not stop on %s; escalating", self.name, signal.Signals(sig).name)
        self.pidfile.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def last_error(self, lines: int = 40) -> str:
        """The most telling line of the end of its log: a port someone else took (a server's
        shutdown errors follow it), else the last Python exception or Orthanc error, else the
        last line."""
        tail = [line.strip() for line in self.log_tail(lines).splitlines() if line.strip()]
        busy = [line for line in tail if "address already in use" in line.lower()]
        errors = [line for line in tail if _ERROR_LINE.match(line)]
        return (busy or errors or tail or ["(empty log)"])[-1]


@contextmanager
def lifecycle_lock(run_dir: Path, wait: bool = True) -> Iterator[bool]:
    """The site's lock for starting and stopping components (`site up`, `down`, `restart` and
    the supervisor). Yields whether it is held (``wait=False`` does not wait for it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lifecycle.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of ``/proc/PID/stat``);
    unlike a wall-clock time, it never changes. None where there is no such file."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])  # the name may hold spaces and ')'


def _same_start(proc: psutil.Process, info: dict) -> bool:
    """Whether ``proc`` is the process a PID file recorded (not another one under its PID)."""
    ticks = info.get("start_ticks")
    if ticks is not None:
        return start_ticks(proc.pid) == ticks
    # a PID file written before start_ticks: the wall-clock time, with room for clock steps
    return abs(proc.create_time() - info["create_time"]) < 300


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``procs`` still running after at most ``timeout`` seconds. A process that has
    exited counts as gone while it waits as a zombie for its parent to collect it: an orphan's
    parent is init, and an init that reaps only now and then (measured on the project's
    machines: up to 2 s) would otherwise add its delay to every stop (``psutil.wait_procs``
    waits until the PID is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        if not proc.is_running():  # gone, or its PID reused
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(proc.pid)
            return False
        return True
    except psutil.NoSuchProcess:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process (avoids zombies in tests)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
