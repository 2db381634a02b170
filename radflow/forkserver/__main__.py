"""``python -m radflow.forkserver --socket PATH -- WORKER...``: start the worker, preload what
flow runs import, then serve (:mod:`radflow.forkserver`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from radflow.forkserver import __doc__ as DESCRIPTION
from radflow.forkserver.serve import Server, Signals, listen, log


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


def worker_dies_with_server() -> None:
    """In the worker, before its exec: die with the server, else the site's supervisor would
    start a second worker beside it. SIGKILL, as if the component had been killed whole: a
    clean stop would remove the runs' working folders under them (they go on, orphaned, and
    the supervisor reruns what crashed)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.forkserver", description=DESCRIPTION)
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
