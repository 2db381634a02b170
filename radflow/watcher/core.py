"""The change watcher: Orthanc's /changes feed -> ingest requests -> ingest flow runs.

Guarantees (each tested by restarting a component mid-stream):

* Deletions in Orthanc reach the catalog: Orthanc's change log does not record them, so the
  watcher compares Orthanc's counts with the catalog's every few seconds and reconciles when
  they differ while nothing is on its way.
* Nothing is missed. The cursor in the feed is stored in the catalog in the same transaction as
  the requests made from the changes it covers. Orthanc forgets series that were still settling
  when it stopped (it never reports them stable after a restart), so the watcher keeps its own
  list of series reported new and not yet stable, and asks Orthanc about any that stay there
  past the stable age. It also reconciles Orthanc with the catalog when it starts, whenever
  Orthanc comes back after being unreachable, and every few minutes.
* Nothing is ingested twice. A series in a given state (Orthanc's ``LastUpdate`` and its
  instance count) is requested once (a unique constraint). Ingest runs are started with the
  idempotency key ``ingest-run-<n>``, ``n`` counted in the catalog: however often a start is
  retried (Prefect down, watcher killed before it recorded the run), Prefect creates one run;
  each run claims requests in numbered batches until it is idle.

The loop itself (heartbeat, Orthanc and Prefect up/down, the failure policy) is
:class:`radflow.service.ServiceLoop`, which the site agent reuses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow.catalog import outbox
from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import IngestRequest, Series, SettlingSeries, WatcherState, utcnow
from radflow.catalog.store import delete_series
from radflow.enums import RequestStatus
from radflow.errors import OrthancError
from radflow.orthanc.client import OrthancClient, series_state
from radflow.prefect_api import PrefectApi
from radflow.service import ServiceLoop
from radflow.watcher.runs import RunKeeper

logger = logging.getLogger("radflow.watcher")
CURSOR = "orthanc-changes"


@dataclass
class WatcherConfig:
    poll_seconds: float = 0.5
    check_seconds: float = 2.0
    reconcile_seconds: float = 300.0
    retry_after_seconds: float = 20.0
    stable_age_seconds: float = 10.0  # Orthanc's StableAge at this site
    ingest_idle_seconds: float = 30.0  # an ingest run ends after this long without new series
    recount_seconds: float = 5.0  # how often to compare counts (to notice deletions)


class Watcher(ServiceLoop):
    """Follow one site's Orthanc and keep its catalog current through ingest flow runs.

    Args:
        orthanc: client of the site's Orthanc.
        catalog_url: the site catalog.
        prefect: typed client of the site's Prefect server.
        deployment: full name of the ingest deployment, e.g. ``ingest/lab``.
        site: the site name (passed to the flow runs).
        heartbeat: file the watcher rewrites every loop (read by `radflow site status`).
    """

    def __init__(self, orthanc: OrthancClient, catalog_url: str, prefect: PrefectApi,
                 deployment: str, site: str, heartbeat: Any = None,
                 config: WatcherConfig | None = None) -> None:
        self.config = config or WatcherConfig()
        super().__init__("watcher", heartbeat, self.config.poll_seconds,
                         dependencies=("orthanc", "prefect"))
        self.orthanc = orthanc
        self.catalog_url = catalog_url
        self.site = site
        self.runs = RunKeeper(catalog_url, prefect, deployment, site,
                              self.config.retry_after_seconds, self.config.ingest_idle_seconds)
        self._last_check = 0.0
        self._last_settling_check = 0.0
        self._last_reconcile = 0.0
        self._needs_reconcile = True
        self.on_up("orthanc", self._orthanc_back)
        get_engine(catalog_url)  # creates or upgrades the schema if needed

    # -- the loop ------------------------------------------------------------------------------
    def tick(self) -> None:
        """One pass: follow changes, reconcile if due, start ingest runs, check them."""
        self.guard("orthanc", self._follow)
        self.guard("prefect", self._runs)

    def _follow(self) -> None:
        self.follow_changes()
        now = time.monotonic()
        if now - self._last_settling_check > 2.0:
            self._last_settling_check = now
            self.check_settling()
        if self._needs_reconcile or now - self._last_reconcile > self.config.reconcile_seconds \
                or (now - self._last_reconcile > self.config.recount_seconds
                    and self._counts_differ()):
            self.reconcile()

    def _runs(self) -> None:
        self.runs.ensure_runner()
        if time.monotonic() - self._last_check > self.config.check_seconds:
            self._last_check = time.monotonic()
            self.runs.check()

    def _orthanc_back(self) -> None:
        self.logger.info("Orthanc is back: reconciling")
        self._needs_reconcile = True

    def detail(self) -> dict[str, Any]:
        with session_scope(self.catalog_url) as session:
            counts = outbox.counts(session)
            state = session.get(WatcherState, CURSOR)
        queued = counts.get(RequestStatus.PENDING, 0) + counts.get(RequestStatus.BATCHED, 0)
        cursor = state.last_seq if state else 0
        return {"cursor": cursor, "requests": counts,
                "detail": f"cursor {cursor}, {queued} series queued"}

    # -- Orthanc -> requests -------------------------------------------------------------------
    def follow_changes(self) -> int:
        """Read new changes; record requests and the new cursor atomically. Returns #changes."""
        seen = 0
        while True:
            with session_scope(self.catalog_url) as session:
                state = session.get(WatcherState, CURSOR) or WatcherState(name=CURSOR)
                page = self.orthanc.changes(since=state.last_seq, limit=200)
                if not page["Changes"] and page["Last"] < state.last_seq:
                    logger.warning("Orthanc's change log restarted (last %s < cursor %s): "
                                   "resetting the cursor and reconciling", page["Last"], state.last_seq)
                    state.last_seq = 0
                    self._needs_reconcile = True
                for change in page["Changes"]:
                    self._apply(session, change)
                state.last_seq = max(state.last_seq, page["Last"])
                state.updated_at = utcnow()
                session.add(state)
            seen += len(page["Changes"])
            if page["Done"] or not page["Changes"]:
                return seen

    def _apply(self, session: Session, change: dict[str, Any]) -> None:
        kind, oid = change["ChangeType"], change["ID"]
        if kind == "NewSeries":
            session.merge(SettlingSeries(series_orthanc_id=oid))
        elif kind == "StableSeries":
            settling = session.get(SettlingSeries, oid)
            if settling is not None:
                session.delete(settling)
            self._request(session, oid, reason="stable")

    def _request(self, session: Session, series_id: str, *, reason: str,
                 state: str | None = None) -> bool:
        """Add a request for the series' current state unless it exists. True if added."""
        if state is None:
            try:
                state = series_state(self.orthanc.resource("series", series_id))
            except OrthancError as exc:
                if exc.status == 404:
                    return False  # deleted since: its Deleted change follows
                raise
        return outbox.add(session, series_id, state, reason)

    def _counts_differ(self) -> bool:
        """Orthanc and the catalog disagree on counts while nothing is on its way: something was
        deleted in Orthanc (its change log does not record deletions)."""
        with session_scope(self.catalog_url) as session:
            busy = session.exec(select(func.count()).select_from(IngestRequest).where(
                col(IngestRequest.status).in_([RequestStatus.PENDING, RequestStatus.BATCHED]))).one()
            settling = session.exec(select(func.count()).select_from(SettlingSeries)).one()
            if busy or settling:
                return False
            series = session.exec(select(func.count()).select_from(Series)).one()
            instances = session.exec(select(func.coalesce(func.sum(Series.num_instances), 0))).one()
        held = self.orthanc.statistics()
        return (held["CountSeries"], held["CountInstances"]) != (series, instances)

    def check_settling(self) -> int:
        """Request series that Orthanc now calls stable without having said so (it restarted
        while they settled). Returns how many were requested."""
        limit = utcnow() - timedelta(seconds=self.config.stable_age_seconds + 5)
        requested = 0
        with session_scope(self.catalog_url) as session:
            overdue = session.exec(select(SettlingSeries).where(SettlingSeries.seen_at < limit)).all()
            for row in overdue:
                try:
                    body = self.orthanc.resource("series", row.series_orthanc_id)
                except OrthancError as exc:
                    if exc.status != 404:
                        raise
                    session.delete(row)  # deleted meanwhile
                    continue
                if body.get("IsStable"):
                    requested += self._request(session, row.series_orthanc_id, reason="settled",
                                               state=series_state(body))
                    session.delete(row)
        if requested:
            logger.info("%d series became stable without Orthanc reporting it (restart?)", requested)
        return requested

    def reconcile(self) -> dict[str, int]:
        """Request every stable series whose state the catalog lacks; drop catalog series that
        Orthanc no longer has."""
        states = self.orthanc.series_states()
        added = removed = 0
        with session_scope(self.catalog_url) as session:
            cataloged = dict(session.exec(select(Series.orthanc_id, Series.orthanc_state)).all())
            for sid, state in states.items():
                if state["IsStable"] and cataloged.get(sid) != state["State"]:
                    try:
                        with session.begin_nested():
                            added += self._request(session, sid, reason="reconcile",
                                                   state=state["State"])
                    except IntegrityError:
                        pass
            for sid in set(cataloged) - set(states):
                delete_series(session, sid)
                removed += 1
        self._needs_reconcile = False
        self._last_reconcile = time.monotonic()
        if added or removed:
            logger.info("reconcile: %d series requested, %d removed from the catalog", added, removed)
        return {"requested": added, "removed": removed}


def watcher_for(ctx: Any, heartbeat: bool = False) -> Watcher:
    """The watcher of a site (its Orthanc, catalog, Prefect server and ingest deployment)."""
    from radflow.plugins import deployment_name

    return Watcher(ctx.orthanc_client(timeout=30), ctx.catalog_url, ctx.prefect(),
                   deployment_name("ingest", ctx.name), ctx.name,
                   heartbeat=ctx.paths.run / "watcher.json" if heartbeat else None,
                   config=WatcherConfig(stable_age_seconds=ctx.config.stable_age,
                                        ingest_idle_seconds=ctx.settings.ingest_idle_seconds))
