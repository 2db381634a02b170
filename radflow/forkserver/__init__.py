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

The package: :mod:`radflow.forkserver.serve` is the server's loop and what a forked run does;
``__main__`` is the start-up (the worker, the preloading).

Example:
    ```python
    from radflow.forkserver import warm_command
    print(warm_command("/srv/radflow/run/forkserver.sock"))
    ```
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from radflow.forkserver.serve import Run, Server, Signals, listen, log

__all__ = ["SOCKET_NAME", "Run", "Server", "Signals", "listen", "log", "warm_command"]

SOCKET_NAME = "forkserver.sock"


def warm_command(socket_path: str | Path) -> str:
    """The job variable ``command`` that starts a flow run through the server at
    ``socket_path`` (or cold, where none answers)."""
    client = Path(__file__).parents[1] / "forkclient.py"
    return shlex.join([sys.executable, "-S", "-I", str(client), str(socket_path)])
