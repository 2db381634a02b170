"""The sites' long poll for jobs, without blocking the API's event loop and without a database
query per waiting site every few hundred milliseconds. Jobs are queued by the coordinator flows
on the hub's Prefect worker (another process), so no in-process signal sees them: one watcher
task per API process asks the database, in a worker thread, which sites have open jobs (one
indexed query every ``interval`` seconds, however many sites wait) and wakes the sites whose
open jobs are not all known to them. Each woken site then reads its own jobs (in a thread).

    watch = JobWatch(engine)
    jobs = await watch.wait("uk-essen", known={"<job id>"}, timeout=20.0)
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from radflow.hub import study_jobs
from radflow.hub.models import HubJob


def open_jobs(engine: Engine) -> dict[str, set[str]]:
    """Every site's open (queued or taken) job ids."""
    found: dict[str, set[str]] = defaultdict(set)
    with Session(engine) as session:
        for site, job_id in session.exec(select(HubJob.site, HubJob.id).where(
                HubJob.status.in_(("queued", "taken")))):
            found[site].add(job_id)
    return found


class JobWatch:
    """Long polls of every site, woken by one watcher task."""

    def __init__(self, engine: Engine, interval: float = 0.5) -> None:
        self.engine, self.interval = engine, interval
        self._waiting: dict[asyncio.Event, tuple[str, frozenset[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def wait(self, site: str, known: set[str], timeout: float) -> list[dict[str, Any]]:
        """The site's open jobs: at once when one is not in ``known``, else when one comes or
        ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            every = await asyncio.to_thread(study_jobs.queued_jobs, self.engine, site)
            if any(j["id"] not in known for j in every) or loop.time() >= deadline:
                return every
            woken = asyncio.Event()
            self._waiting[woken] = (site, frozenset(known))
            self._start()
            try:
                await asyncio.wait_for(woken.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(woken, None)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Wake the waiting sites that have a job they do not know; ends when none waits."""
        while self._waiting:
            await asyncio.sleep(self.interval)
            try:
                found = await asyncio.to_thread(open_jobs, self.engine)
            except SQLAlchemyError:  # a database hiccup: every waiter looks for itself
                found = None
            for event, (site, known) in list(self._waiting.items()):
                if found is None or found.get(site, set()) - known:
                    event.set()
