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

logger = logging.getLogger("radflow.watcher")
RUNS = "ingest-runs"
LIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED"}
FAILED = {"FAILED", "CRASHED", "CANCELLED", "CANCELLING"}


class RunKeeper:
    """Start ingest runs when needed; release what finished runs left claimed."""

    def __init__(self, catalog_url: str, deployment: str, site: str, retry_after: float) -> None:
        self.catalog_url = catalog_url
        self.deployment = deployment
        self.site = site
        self.retry_after = retry_after
        self._deployment_id = None

    def _client(self):
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def ensure_runner(self) -> str | None:
        """Start an ingest run if requests are pending and none is live; returns its id."""
        with session_scope(self.catalog_url) as session:
            if not outbox.counts(session).get("pending"):
                return None
            state = session.get(WatcherState, RUNS) or WatcherState(name=RUNS)
            active, number = state.active_run, state.runs_started + 1
        with self._client() as client:
            if active and client.read_flow_run(active).state.type.value in LIVE:
                return active
            if self._deployment_id is None:
                self._deployment_id = client.read_deployment_by_name(self.deployment).id
            run = client.create_flow_run_from_deployment(
                self._deployment_id, parameters={"site": self.site},
                idempotency_key=f"ingest-run-{number}", tags=["radflow", "ingest"])
        with session_scope(self.catalog_url) as session:
            state = session.get(WatcherState, RUNS) or WatcherState(name=RUNS)
            state.runs_started, state.active_run, state.updated_at = number, str(run.id), utcnow()
            session.add(state)
        logger.info("started ingest run %s (%s)", run.name, run.id)
        return str(run.id)

    def check(self) -> None:
        """Release requests held by runs that ended; re-queue failed requests after a delay."""
        with session_scope(self.catalog_url) as session:
            holding = outbox.open_runs(session)
        ended = {}
        if holding:
            with self._client() as client:
                for run_id in holding:
                    state = client.read_flow_run(run_id).state
                    if state is not None and state.type.value not in LIVE:
                        ended[run_id] = f"ingest run ended {state.type.value.lower()}: {state.message}"
        with session_scope(self.catalog_url) as session:
            for run_id, error in ended.items():
                if outbox.release(session, run_id, error):
                    logger.warning("%s", error)
            outbox.requeue_failed(session, utcnow() - timedelta(seconds=self.retry_after))
