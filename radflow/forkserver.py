"""A warm start for flow runs: a process that imports Prefect and the flows once, then forks a
ready process for each flow run its worker starts.

A flow run's process used to spend about 4 s of CPU importing Prefect and radflow before it
did anything (measured in stop 34: ``python -m prefect.engine`` under cProfile). On a site with
a few cores that was most of a short run, and four runs starting at once took a study round.

Run as the worker component's command::

    python -m radflow.forkserver --socket RUN/forkserver.sock -- python -m prefect worker start ...

it listens on the socket, starts the worker (its child, in its process group), imports
Prefect's engine and every installed plugin's flow modules, then serves until the worker ends,
and ends with its code. The deployments' ``command`` job variable is
``python -S -I forkclient.py SOCKET`` (:func:`warm_command`); :mod:`radflow.forkclient` passes
its stdio, environment and working directory over the socket, and the server forks. The child
takes them on, reloads Prefect's settings and logging from that environment, and runs
``prefect.engine`` as ``python -m prefect.engine`` would.

It is one thread, on purpose: a process that forks must not have other threads (a lock held by
one would stay held in the child forever). Nothing here opens a connection or starts a loop
before it forks; every run opens its own.

Example:
    ```python
    from radflow.forkserver import warm_command
    print(warm_command("/srv/radflow/run/forkserver.sock"))
    ```
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

SOCKET_NAME = "forkserver.sock"


def warm_command(socket_path: str | Path) -> str:
    """The job variable ``command`` that starts a flow run through the server at
    ``socket_path`` (or cold, where none answers)."""
    client = Path(__file__).with_name("forkclient.py")
    return shlex.join([sys.executable, "-S", "-I", str(client), str(socket_path)])


def preload_modules() -> list[str]:
    """What every flow run imports: Prefect's engine and the installed plugins' flow modules,
    and what most of them import on their way: Alembic (each run checks its database's
    schema, 0.4 s to import) and matplotlib's pyplot for the reports' charts (0.6 to 0.9 s;
    with the Agg backend, as the charts set it)."""
    modules = ["prefect", "prefect.engine", "prefect.flow_engine", "prefect.task_engine",
               "prefect.flows", "prefect.deployments", "prefect.runner.storage",
               "alembic.command", "radflow.catalog.migrate", "matplotlib.pyplot"]
    try:
        from radflow.plugins import site_deployments

        modules += sorted({spec.flow.rpartition(".")[0] for spec in site_deployments()})
    except Exception as exc:  # noqa: BLE001 (a broken plugin: its runs import it and fail there)
        log(f"plugins not preloaded: {exc}")
    return modules


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


def worker_dies_with_server() -> None:
    """In the worker, before its exec: die with the server, else the site's supervisor would
    start a second worker beside it. SIGKILL, as if the component had been killed whole: a
    clean stop would remove the runs' working folders under them (they go on, orphaned, and
    the supervisor reruns what crashed)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.forkserver", description=__doc__)
    parser.add_argument("--socket", required=True, type=Path, help="where to listen")
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE",
                        help="a module to import besides Prefect's and the plugins' flows")
    parser.add_argument("worker", nargs=argparse.REMAINDER,
                        help="-- and the worker's command, started as this process's child")
    args = parser.parse_args(argv)
    worker_argv = args.worker[1:] if args.worker[:1] == ["--"] else args.worker
    if not worker_argv:
        parser.error("no worker command after --")
    sock = listen(args.socket)
    worker = subprocess.Popen(worker_argv, preexec_fn=worker_dies_with_server)
    signals = Signals(worker)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signals.received)
    started = time.monotonic()
    for name in preload_modules() + args.preload:
        try:
            if name == "matplotlib.pyplot":  # the backend the charts use, chosen before pyplot
                importlib.import_module("matplotlib").use("Agg")
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (its runs import it themselves, and say why)
            log(f"{name} not preloaded: {exc}")
    signals.check()
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:  # forking now could copy a held lock: serve nothing, runs start cold
        log(f"importing started threads ({', '.join(threads)}); flow runs will start cold")
        sock.close()
        args.socket.unlink(missing_ok=True)
        while worker.poll() is None:
            signals.check()
            time.sleep(0.2)
        return worker.returncode
    log(f"warm in {time.monotonic() - started:.1f} s; serving {args.socket}")
    try:
        return Server(sock, worker, signals).serve()
    finally:
        args.socket.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
