"""Bring a site's components up side by side where their dependencies allow.

Each component starts as soon as those it depends on are up, so Orthanc, the Prefect server and
the identity provider start at once, and a site comes up in the time of its longest chain of
dependencies rather than of all its components in a row. The supervisor, which restarts the
others, starts when all of them are up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from radflow.errors import SiteError
from radflow.site.components import Component

BringUp = Callable[[Component, threading.Event], None]


def start_components(parts: Sequence[Component], bring_up: BringUp) -> None:
    """Call ``bring_up(part, abandon)`` for each part once the parts it depends on (those in
    ``parts``) were brought up. After the first failure nothing more starts, ``abandon`` is set
    (a part waiting for its health stops waiting), and once those in flight have returned the
    failure is raised.

    Raises:
        Exception: the first failure of ``bring_up``.
    """
    names = {p.name for p in parts}

    def needs(part: Component) -> set[str]:
        if part.name == "supervisor":  # it restarts the others: it comes last
            return names - {part.name}
        return set(part.depends_on) & names

    abandon = threading.Event()
    pending, running = list(parts), dict[Future, Component]()
    up: set[str] = set()
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(len(parts), 1), thread_name_prefix="site-up") as pool:
        try:
            while True:
                if error is None:
                    for part in [p for p in pending if needs(p) <= up]:
                        pending.remove(part)
                        running[pool.submit(bring_up, part, abandon)] = part
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    part = running.pop(future)
                    try:
                        future.result()
                        up.add(part.name)
                    except Exception as exc:  # noqa: BLE001 (the first one is raised below)
                        if error is None:  # the reason; those abandoned after it are not
                            error = exc
                            abandon.set()
        except BaseException:  # interrupted: the threads stop waiting, and it goes on up
            abandon.set()
            raise
    if error is not None:
        raise error
    if pending:  # a dependency outside ``parts`` that site_components let through
        raise SiteError(f"components {', '.join(p.name for p in pending)} were not started",
                        fix="check the depends_on of the installed plugins' components")
