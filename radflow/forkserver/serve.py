"""The fork server's loop (one thread: it forks), and what a forked flow run does before it
runs Prefect's engine."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} forkserver: {message}", file=sys.stderr, flush=True)


def listen(path: Path) -> socket.socket:
    """A socket only this user can reach (bound by its name inside the folder, like the
    client connects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    old = os.umask(0o177)
    try:
        os.chdir(path.parent)
        sock.bind(path.name)
    finally:
        os.umask(old)
        os.chdir(here)
    sock.listen(64)
    sock.setblocking(False)
    return sock


class Signals:
    """SIGINT and SIGTERM to the server. A site's stop signals the whole process group, the
    worker with it, and a Prefect worker takes a second SIGINT as an order to kill its runs: so
    the server passes a signal on only if the worker is still there a while later (it was sent
    to the server alone). The wait is longer than a site's stop gives a component before it
    escalates (20 s), so a stop's own escalation comes first."""

    grace = 30.0

    def __init__(self, worker: subprocess.Popen) -> None:
        self.worker = worker
        self.pending: tuple[int, float] | None = None

    def received(self, signum: int, _frame: object) -> None:
        if self.pending is None:
            self.pending = (signum, time.monotonic())

    def check(self) -> None:
        if self.pending is None or time.monotonic() - self.pending[1] < self.grace:
            return
        signum, _ = self.pending
        self.pending = (signum, float("inf"))  # once
        if self.worker.poll() is None:
            log(f"passing {signal.Signals(signum).name} on to the worker")
            self.worker.send_signal(signum)


class Run:
    """One connection: a client and, once forked, its flow run's process."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = bytearray()
        self.fds: list[int] = []
        self.pid: int | None = None


class Server:
    def __init__(self, sock: socket.socket, worker: subprocess.Popen, signals: Signals) -> None:
        self.sock = sock
        self.worker = worker
        self.signals = signals
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.runs: dict[int, Run] = {}  # by the connection's fd
        self.startup_cwd = os.getcwd()

    # -- the loop ------------------------------------------------------------------------
    def serve(self) -> int:
        while True:
            for key, _ in self.selector.select(timeout=0.1):
                if key.data is None:
                    self.accept()
                else:
                    self.readable(key.data)
            self.reap()
            self.signals.check()
            code = self.worker.poll()
            if code is not None:
                log(f"worker ended ({code}); {len(self.runs)} run(s) still connected")
                return code

    def accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():  # the folder is ours; belt and braces
            conn.close()
            return
        conn.setblocking(False)
        run = Run(conn)
        self.runs[conn.fileno()] = run
        self.selector.register(conn, selectors.EVENT_READ, run)

    def readable(self, run: Run) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(run.conn, 65536, 8)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        run.fds.extend(fds)
        if not data:
            self.hang_up(run)
            return
        run.buffer.extend(data)
        if run.pid is None:
            if len(run.buffer) >= 4:
                size = struct.unpack("!I", run.buffer[:4])[0]
                if len(run.buffer) >= 4 + size:
                    request = json.loads(bytes(run.buffer[4:4 + size]))
                    del run.buffer[:4 + size]
                    self.start(run, request)
            return
        while b"\n" in run.buffer:
            line, _, rest = bytes(run.buffer).partition(b"\n")
            run.buffer[:] = rest
            if line.startswith(b"signal ") and run.pid is not None:
                try:
                    os.kill(run.pid, int(line.split()[1]))
                except (ProcessLookupError, ValueError):
                    pass

    def hang_up(self, run: Run) -> None:
        """The client went (killed, or done): its run goes with it."""
        if run.pid is not None:
            try:
                os.kill(run.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close(run)

    def close(self, run: Run) -> None:
        for fd in run.fds:
            os.close(fd)
        run.fds.clear()
        if run.conn.fileno() in self.runs:
            self.selector.unregister(run.conn)
            del self.runs[run.conn.fileno()]
        run.conn.close()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.worker.pid:  # Popen learns of it through its own poll
                self.worker.returncode = os.waitstatus_to_exitcode(status)
                continue
            code = os.waitstatus_to_exitcode(status)
            for run in list(self.runs.values()):
                if run.pid == pid:
                    try:
                        run.conn.setblocking(True)
                        run.conn.sendall(f"exit {code}\n".encode())
                    except OSError:
                        pass
                    run.pid = None
                    self.close(run)

    # -- a run -----------------------------------------------------------------------------
    def start(self, run: Run, request: dict) -> None:
        if len(run.fds) < 3:
            self.close(run)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:  # no memory or process left: this run starts cold, the server stays
            log(f"fork failed ({exc}): the run starts cold")
            self.close(run)
            return
        if pid == 0:
            code = 1
            try:
                code = self.child(run, request)
            finally:
                os._exit(code)
        for fd in run.fds:
            os.close(fd)
        run.fds.clear()
        run.pid = pid
        log(f"run {pid} forked ({request.get('module', 'prefect.engine')})")
        try:
            run.conn.setblocking(True)
            run.conn.sendall(f"pid {pid}\n".encode())
            run.conn.setblocking(False)
        except OSError:
            self.hang_up(run)

    def child(self, run: Run, request: dict) -> int:
        """In the forked process: become the flow run's engine process."""
        self.selector.close()
        self.sock.close()
        for other in self.runs.values():
            if other is not run:
                other.conn.close()
        run.conn.close()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), run.fds[:3], strict=True):
            os.dup2(fd, target)
        for fd in run.fds:
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if sys.path and sys.path[0] == self.startup_cwd:
            sys.path[0] = request["cwd"]
        sys.path[:0] = [p for p in extra if p not in sys.path]
        reseed()
        code = 0
        try:
            import runpy

            from prefect.context import refresh_global_settings_context
            from prefect.logging.configuration import setup_logging

            refresh_global_settings_context()
            setup_logging(incremental=False)
            sys.argv = ["-m"]
            with warnings.catch_warnings():  # imported here already, as the server preloads it
                warnings.filterwarnings("ignore", ".* found in sys.modules", RuntimeWarning)
                runpy.run_module(request.get("module", "prefect.engine"), run_name="__main__",
                             alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 (what the interpreter would print, then exit 1)
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            shutdown()
        return code


def reseed() -> None:
    """A forked child shares its parent's random state: draw fresh seeds (``random`` does so
    itself at fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def shutdown() -> None:
    """What the interpreter does at exit, which ``os._exit`` skips: join the threads that are
    not daemons, run the atexit functions (Prefect sends its last logs there), flush."""
    import atexit

    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
