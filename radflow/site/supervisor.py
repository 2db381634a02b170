"""The site's supervisor (the ``supervisor`` component): brings back a component that died.

It also reschedules a flow run of a deployment that crashed (its worker or the machine died
under it): a new run of the same deployment with the same parameters, tagged
``rerun-of:<first run's id>`` and ``attempt:<n>``, at most ``MAX_RESCHEDULES`` times per first
run. The pipeline's steps find the results an earlier attempt stored (same keys), so only what
is missing is computed, and nothing is stored twice. Reschedules are logged and kept in
``run/rescheduled.json``.

`radflow site up` starts it after every other component. Once a second it looks at each
component's PID file. A clean stop (`site down`, `site restart`) removes that file first, so a
PID file whose process is gone means the process died: the supervisor starts the component
again and waits until it is healthy, after a delay that doubles with each death in the last
ten minutes (1, 2, 4 ... 60 s). Every death and restart is logged (``logs/supervisor.log``)
and counted in ``run/restarts.json``, which `radflow site status` shows.

Starting and stopping components takes the site's lifecycle lock
(:func:`radflow.site.process.lifecycle_lock`), so the supervisor never races `site up`,
`site restart` or `site down`.

    python -m radflow.site.supervisor --site NAME
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from radflow.errors import RadflowError
from radflow.service import ServiceLoop

WINDOW = 600.0  # seconds of deaths that count towards the delay
MAX_DELAY = 60.0
MAX_RESCHEDULES = 3  # new runs after a crash, per first run
RESCHEDULE_EVERY = 3.0  # seconds between looks for crashed flow runs


def restarts_file(run_dir: Path) -> Path:
    return run_dir / "restarts.json"


def read_restarts(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per component: ``count`` (restarts since the site was started), ``last`` (epoch
    seconds), ``error`` (why the last attempt failed, if it did)."""
    try:
        return json.loads(restarts_file(run_dir).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def delay_after(deaths: int) -> float:
    """Seconds to wait before restarting after the ``deaths``-th death in the window."""
    return min(MAX_DELAY, 2.0 ** max(0, deaths - 1))


class Supervisor(ServiceLoop):
    """Restarts the site's components whose process died."""

    def __init__(self, ctx: Any, heartbeat: Path | None = None) -> None:
        super().__init__("supervisor", heartbeat, interval=1.0)
        self.ctx = ctx
        self.deaths: dict[str, list[float]] = {}
        self.due: dict[str, float] = {}  # component -> when to start it again
        self.started = time.time()
        self.next_look = 0.0

    def _record(self, name: str, **update: Any) -> None:
        run_dir = self.ctx.paths.run
        data = read_restarts(run_dir)
        entry = data.setdefault(name, {"count": 0})
        entry.update(update)
        tmp = restarts_file(run_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(restarts_file(run_dir))

    def detail(self) -> dict[str, Any]:
        waiting = {k: round(v - time.time(), 1) for k, v in self.due.items()}
        return {"detail": f"restarting {', '.join(sorted(waiting))}" if waiting else
                "watching", "due": waiting}

    def tick(self) -> None:
        self._restart_died()
        if time.time() >= self.next_look:
            self.next_look = time.time() + RESCHEDULE_EVERY
            self._reschedule_crashed()

    def _reschedule_crashed(self) -> None:
        """Each crashed deployment run (from a day before the supervisor started on) is run
        again as a new run of its deployment, at most MAX_RESCHEDULES times per first run; the
        Prefect server may be down: then next time."""
        from datetime import UTC, datetime, timedelta

        path = self.ctx.paths.run / "rescheduled.json"
        try:
            counts = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            counts = {}
        since = datetime.fromtimestamp(self.started, UTC) - timedelta(days=1)
        try:
            api = self.ctx.prefect(timeout=5)
            crashed = api.crashed_deployment_runs(since)
        except RadflowError:
            return
        for run in crashed:
            if run.id in counts:  # handled (rescheduled, or out of attempts)
                continue
            first = next((t.split(":", 1)[1] for t in run.tags if t.startswith("rerun-of:")),
                         run.id)
            attempt = 1 + next((int(t.split(":", 1)[1]) for t in run.tags
                                if t.startswith("attempt:")), 0)
            if attempt > MAX_RESCHEDULES:
                self.logger.error("flow run %s (%s) crashed again; it was rescheduled %d "
                                  "times: giving up", run.name, run.id, MAX_RESCHEDULES)
                counts[run.id] = None
            else:
                tags = (*[t for t in run.tags if not t.startswith(("rerun-of:", "attempt:"))],
                        f"rerun-of:{first}", f"attempt:{attempt}")
                try:
                    again = api.rerun(run, tags, idempotency_key=f"rerun-{first}-{attempt}")
                except RadflowError as exc:
                    self.logger.warning("flow run %s could not be rescheduled: %s", run.name,
                                        exc.message)
                    continue
                counts[run.id] = again.id
                self.logger.warning("flow run %s (%s) crashed: rescheduled as %s (%s), attempt "
                                    "%d of %d", run.name, run.id, again.name, again.id,
                                    attempt, MAX_RESCHEDULES)
            path.write_text(json.dumps(counts, indent=1))

    def _restart_died(self) -> None:
        from radflow.site.components import site_components
        from radflow.site.process import lifecycle_lock

        now = time.time()
        for part in site_components():
            if part.name == "supervisor" or not part.enabled(self.ctx):
                continue
            proc = part.process(self.ctx)
            if part.name not in self.due:
                if not proc.died():
                    continue
                deaths = [t for t in self.deaths.get(part.name, []) if now - t < WINDOW]
                deaths.append(now)
                self.deaths[part.name] = deaths
                delay = delay_after(len(deaths))
                self.due[part.name] = now + delay
                self.logger.warning("%s died; starting it again in %.0f s (death %d in the "
                                    "last %.0f min)", part.name, delay, len(deaths),
                                    WINDOW / 60)
            if now < self.due[part.name]:
                continue
            with lifecycle_lock(self.ctx.paths.run, wait=False) as held:
                if not held:  # `site up/down/restart` is at work: look again next tick
                    continue
                if proc.pid is not None or not proc.died():  # started or stopped meanwhile
                    self.due.pop(part.name)
                    continue
                self._restart(part)

    def _restart(self, part: Any) -> None:
        from radflow.prefect_api import outside_event_loop

        count = read_restarts(self.ctx.paths.run).get(part.name, {}).get("count", 0) + 1
        try:
            part.start(self.ctx)
            # counted as soon as it runs again: `site status` never shows a new PID uncounted
            self._record(part.name, count=count, last=time.time(), error=None)
            part.wait_healthy(self.ctx, self.ctx.settings.start_timeout)
            outside_event_loop(part.after_healthy, self.ctx, self.logger.info)
        except RadflowError as exc:
            part.process(self.ctx).mark_died()
            deaths = self.deaths.setdefault(part.name, [])
            deaths.append(time.time())
            delay = delay_after(len(deaths))
            self.due[part.name] = time.time() + delay
            self.logger.error("%s did not come back (%s); trying again in %.0f s", part.name,
                              exc.message.splitlines()[0], delay)
            self._record(part.name, count=count, last=time.time(),
                         error=exc.message.splitlines()[0])
            return
        self.due.pop(part.name, None)
        self.logger.info("%s is back (restart %d)", part.name, count)


def main(argv: list[str] | None = None) -> int:
    from radflow.service import run_site_service

    def make(ctx: Any) -> Supervisor:
        import os

        from radflow.site.components import component

        # the PID file a systemd unit follows (Type=forking; radflow.site.systemd)
        (ctx.paths.run / "supervisor.main.pid").write_text(f"{os.getpid()}\n")
        return Supervisor(ctx, component("supervisor").heartbeat(ctx))

    return run_site_service("python -m radflow.site.supervisor", make, argv)


if __name__ == "__main__":
    sys.exit(main())
