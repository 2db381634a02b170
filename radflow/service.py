"""The loop of a long-running site service (the change watcher; phase 6's site agent).

A service repeats one ``tick`` forever. Around it the loop keeps what every service needs:

* a heartbeat file, rewritten every tick, that `radflow site status` reads (its age says whether
  the service is alive, its ``dependencies`` say what it waits for, ``detail`` what it does);
* up/down tracking of what it depends on (Orthanc, Prefect, the hub), logged once per change;
* one typed policy for failures (:meth:`ServiceLoop.guard`): a transient failure marks its
  dependency down and the service carries on; a :class:`~radflow.errors.RadflowError` is logged
  with its fix and kept in the heartbeat; anything else is logged with its traceback, and after
  ``max_unexpected`` in a row the service exits (status 1) rather than spin.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from radflow.errors import RadflowError, is_transient

T = TypeVar("T")


class ServiceLoop:
    """Base class of a site service.

    Args:
        name: the service's name (its logger is ``radflow.<name>``).
        heartbeat: the file to rewrite every tick (None: no heartbeat).
        interval: seconds to sleep between ticks.
        dependencies: names of what it depends on, e.g. ``("orthanc", "prefect")``.
    """

    max_unexpected = 50

    def __init__(self, name: str, heartbeat: Path | None = None, interval: float = 0.5,
                 dependencies: tuple[str, ...] = ()) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.interval = interval
        self.logger = logging.getLogger(f"radflow.{name}")
        self.up: dict[str, bool] = {d: True for d in dependencies}
        self.last_error: str | None = None
        self._unexpected = 0
        self._on_up: dict[str, Callable[[], None]] = {}

    # -- to override ---------------------------------------------------------------------------
    def tick(self) -> None:
        """One pass of the service's work."""
        raise NotImplementedError

    def detail(self) -> dict[str, Any]:
        """What the heartbeat tells besides liveness (``detail``: one line for status)."""
        return {}

    # -- the loop ------------------------------------------------------------------------------
    def run_forever(self) -> None:
        self.logger.info("%s started", self.name)
        while True:
            self.step()
            time.sleep(self.interval)

    def step(self) -> None:
        """One tick, then the heartbeat. Unexpected errors are counted (see the module doc)."""
        try:
            self.tick()
            self._unexpected = 0
        except Exception as exc:  # a bug, not a dependency: logged; too many in a row, exit
            self._unexpected += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.logger.exception("%s: unexpected error (%d in a row)", self.name,
                                  self._unexpected)
            if self._unexpected >= self.max_unexpected:
                raise SystemExit(1) from exc
        self.beat()

    def on_up(self, dependency: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``dependency`` comes back after being down."""
        self._on_up[dependency] = callback

    def guard(self, dependency: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Run ``fn`` against a dependency under the failure policy; None when it failed."""
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                self.mark(dependency, False, exc)
                return None
            if isinstance(exc, RadflowError):
                if self.last_error != exc.message:
                    self.logger.error("%s", exc)
                self.last_error = exc.message
                return None
            raise
        self.mark(dependency, True)
        return result

    def mark(self, dependency: str, up: bool, exc: BaseException | None = None) -> None:
        """Record a dependency up or down (logged when it changes, and the heartbeat rewritten
        at once: what comes next may block for a while, retrying it, and the status must not
        say "up" meanwhile)."""
        was = self.up.get(dependency, True)
        self.up[dependency] = up
        if was and not up:
            reason = getattr(exc, "message", None) or type(exc).__name__
            self.logger.warning("%s is unreachable (%s); retrying", dependency, reason)
            self.beat()
        elif up and not was:
            self.logger.info("%s is reachable again", dependency)
            self.beat()
            if dependency in self._on_up:
                self._on_up[dependency]()

    def beat(self) -> None:
        if self.heartbeat is None:
            return
        body = {"time": time.time(), "service": self.name, "last_error": self.last_error,
                "dependencies": {k: "up" if v else "down" for k, v in self.up.items()},
                **self.detail()}
        tmp = self.heartbeat.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, default=str))
        tmp.replace(self.heartbeat)


def restore_sigint() -> None:
    """Make SIGINT interrupt this process again where it started with SIGINT ignored.

    A shell starts a background job (``cmd &`` in a script, ``nohup``) with SIGINT ignored, the
    children inherit that across ``exec``, and Python then installs no KeyboardInterrupt handler.
    A site's services stop on SIGINT (:meth:`radflow.site.process.ManagedProcess.stop`); one that
    ignores it is stopped only by the SIGTERM 20 s later. A process with a handler installed
    passes SIGINT on to what it starts at its default (``exec`` resets handled signals), so
    calling this in the CLI and in each service fixes the whole tree. No-op outside the main
    thread and where SIGINT is not ignored."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_site_service(prog: str, make: Callable[[Any], ServiceLoop],
                     argv: list[str] | None = None) -> int:
    """The ``main`` of a site service (``python -m MODULE --site NAME``, as `radflow site up`
    starts it): logs to stdout, exits on SIGTERM, runs ``make(site_context)`` until stopped. A
    RadflowError (a missing site, a bad configuration) is logged and exits 1."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--site", required=True, help="site name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    restore_sigint()

    from radflow.site import SiteManager

    try:
        make(SiteManager().context(args.site)).run_forever()
    except KeyboardInterrupt:
        return 0
    except RadflowError as exc:
        logging.getLogger(f"radflow.{prog.rsplit('.', 1)[-1]}").error("%s", exc)
        return 1
    return 0
