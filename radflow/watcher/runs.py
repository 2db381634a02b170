"""Starting ingest runs and looking after them.

The watcher starts an ingest run whenever requests are pending and no run of its own is live;
the run claims requests until it has been idle for a while. So a burst of studies costs one
flow-run start, not one per series. Runs are created with the idempotency key
``ingest-run-<n>``, ``n`` counted in the catalog: a watcher killed between creating a run and
recording it gets the same run back on restart, never a second one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from radflow.catalog import outbox
from radflow.catalog.db import session_scope
from radflow.catalog.models import WatcherState, utcnow
from radflow.enums import RequestStatus
from radflow.prefect_api import LIVE, PrefectApi

logger = logging.getLogger("radflow.watcher")
RUNS = "ingest-runs"


class RunKeeper:
    """Start ingest runs when needed; release what finished runs left claimed."""

    def __init__(self, catalog_url: str, prefect: PrefectApi, deployment: str, site: str,
                 retry_after: float, idle_seconds: float = 30.0) -> None:
        self.catalog_url = catalog_url
        self.prefect = prefect
        self.deployment = deployment
        self.site = site
        self.retry_after = retry_after
        self.idle_seconds = idle_seconds

    def ensure_runner(self) -> str | None:
        """Start an ingest run if requests are pending and none is live; returns its id."""
        with session_scope(self.catalog_url) as session:
            if not outbox.counts(session).get(RequestStatus.PENDING):
                return None
            state = session.get(WatcherState, RUNS) or WatcherState(name=RUNS)
            active, number = state.active_run, state.runs_started + 1
        if active and self.prefect.flow_run(active).state in LIVE:
            return active
        run = self.prefect.create_flow_run(self.deployment, {"site": self.site,
                                                             "idle_seconds": self.idle_seconds},
                                           idempotency_key=f"ingest-run-{number}",
                                           tags=("radflow", "ingest"))
        with session_scope(self.catalog_url) as session:
            state = session.get(WatcherState, RUNS) or WatcherState(name=RUNS)
            state.runs_started, state.active_run, state.updated_at = number, run.id, utcnow()
            session.add(state)
        logger.info("started ingest run %s (%s)", run.name, run.id)
        return run.id

    def check(self) -> None:
        """Release requests held by runs that ended; re-queue failed requests after a delay."""
        with session_scope(self.catalog_url) as session:
            holding = outbox.open_runs(session)
        ended = {}
        for run_id in holding:
            run = self.prefect.flow_run(run_id)
            if run.state not in LIVE:
                ended[run_id] = f"ingest run ended {run.state.lower()}: {run.message}"
        with session_scope(self.catalog_url) as session:
            for run_id, error in ended.items():
                if outbox.release(session, run_id, error):
                    logger.warning("%s", error)
            outbox.requeue_failed(session, utcnow() - timedelta(seconds=self.retry_after))
