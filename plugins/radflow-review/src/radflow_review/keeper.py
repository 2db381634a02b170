"""The review keeper: a site service that expires reviews past their due time (an ``expired``
decision, recorded and resumed like any other: so the case follows its policy and nothing waits
forever), reminds the assignees of reviews half-way there (a log line and an audit event), and
retries the resumes of decided reviews that are still pending in the outbox
(:mod:`radflow_review.decisions`). One bad review is logged and the others go on.

    python -m radflow_review.keeper --site NAME      (started by `radflow site up`)
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from radflow.errors import RadflowError
from radflow.service import ServiceLoop

EXPIRY_ACTOR = "radflow:expiry"
RECHECK_SECONDS = 30.0  # how often a decided review whose run has not applied it is looked at
RECHECK_WINDOW = timedelta(days=1)  # ... for how long after the decision


class ReviewKeeper(ServiceLoop):
    """Expire, remind and retry resumes, every few seconds."""

    def __init__(self, catalog_url: str, prefect: Any, heartbeat: Path | None = None,
                 interval: float = 2.0) -> None:
        super().__init__("reviews", heartbeat, interval, dependencies=("prefect",))
        self.catalog_url = catalog_url
        self.prefect = prefect
        self._looked: dict[str, float] = {}

    def tick(self) -> None:
        from radflow_review.decisions import retry

        self.remind()
        self.expire()
        self.guard("prefect", retry, self.catalog_url, self.prefect, self.logger)
        self.guard("prefect", self.reconcile)

    def _due(self, column: str) -> list[Any]:
        from sqlmodel import col, select

        from radflow.catalog.db import session_scope
        from radflow.catalog.models import Review
        from radflow.enums import ReviewStatus

        now = datetime.now(UTC)
        with session_scope(self.catalog_url) as session:
            query = select(Review).where(Review.status == ReviewStatus.OPEN,
                                         col(getattr(Review, column)) < now)
            if column == "remind_at":
                query = query.where(col(Review.reminded_at).is_(None))
            return list(session.exec(query.order_by(col(getattr(Review, column)))))

    def expire(self) -> int:
        """Decide ``expired`` on every open review past due, and resume its run (what cannot be
        resumed now stays in the outbox for :func:`radflow_review.decisions.retry`); returns
        how many expired. A review that fails is logged, and the next one goes on."""
        from radflow_review.decision import ReviewDecision
        from radflow_review.decisions import AlreadyDecided, deliver, record_decision

        expired = 0
        for row in self._due("due_at"):
            try:
                entry = record_decision(self.catalog_url, row.id, ReviewDecision(
                    decision="expired", reviewer=EXPIRY_ACTOR,
                    comment=f"no decision by {row.due_at:%Y-%m-%d %H:%M} UTC"))
            except AlreadyDecided:  # decided meanwhile
                continue
            except Exception:  # this row only: logged, and the next one goes on
                self.logger.exception("review %s: could not expire it", row.key)
                continue
            expired += 1
            try:
                done = deliver(self.catalog_url, entry, self.prefect)
                self.logger.info("review %s expired: run %s %s", row.key, row.flow_run_id,
                                 done.answer)
            except RadflowError as exc:  # pending in the outbox: retried
                self.logger.warning("review %s expired; its run %s is resumed later: %s",
                                    row.key, row.flow_run_id, exc.message)
        return expired

    def reconcile(self) -> int:
        """Resume again the runs of decided reviews that are still paused although their
        resume was acknowledged (a decision made in the second before the run suspended finds
        it running, and Prefect answers "not paused"); returns how many were resumed. Each
        review is looked at every :data:`RECHECK_SECONDS`, for a day after its decision."""
        from sqlmodel import col, select

        from radflow import outbox
        from radflow.catalog.db import session_scope
        from radflow.catalog.models import Review
        from radflow.enums import ReviewStatus
        from radflow.errors import PrefectUnavailable
        from radflow.prefect_api import NotPaused
        from radflow_review.decision import ReviewDecision

        now, today = time.monotonic(), datetime.now(UTC)
        with session_scope(self.catalog_url) as session:
            rows = list(session.exec(select(Review).where(
                Review.status != ReviewStatus.OPEN, col(Review.applied_at).is_(None),
                col(Review.decided_at) > today - RECHECK_WINDOW,
                col(Review.decided_at) < today - timedelta(seconds=RECHECK_SECONDS))))
        settled = {e.subject for state in ("pending", "refused")  # retried / no such run
                   for e in outbox.entries(self.catalog_url, kind="prefect.resume", state=state)}
        resumed = 0
        for row in rows:
            if f"review:{row.key}" in settled or \
                    now - self._looked.get(row.key, -RECHECK_SECONDS) < RECHECK_SECONDS:
                continue
            self._looked[row.key] = now
            try:
                if self.prefect.flow_run(row.flow_run_id).state != "PAUSED":
                    continue
                self.prefect.resume(row.flow_run_id, ReviewDecision(
                    decision=row.decision, reviewer=row.reviewer, comment=row.comment or "",
                    corrected_seg_uid=row.corrected_seg_uid).model_dump(mode="json"))
            except NotPaused:
                continue
            except PrefectUnavailable:
                raise  # Prefect is away: the guard marks it down
            except RadflowError as exc:  # this row only: logged, and the next one goes on
                self.logger.warning("review %s: its run %s cannot be looked at: %s", row.key,
                                    row.flow_run_id, exc.message)
                continue
            self.logger.info("review %s: its run %s was still paused; resumed", row.key,
                             row.flow_run_id)
            resumed += 1
        return resumed

    def remind(self) -> int:
        """Remind once for every open review past its reminder time (the reminder and its
        audit event in one transaction); returns how many."""
        from sqlalchemy import update
        from sqlmodel import Session, col

        from radflow import outbox
        from radflow.catalog.models import Review, utcnow

        reminded = 0
        for row in self._due("remind_at"):
            def work(session: Session, row: Any = row) -> bool:
                if not session.execute(update(Review).where(
                        Review.id == row.id, col(Review.reminded_at).is_(None)).values(
                        reminded_at=utcnow())).rowcount:
                    return False
                outbox.audit(session, actor="radflow:reviews", action="review.reminded",
                             subject=f"review:{row.key}",
                             detail={"result": row.result_id, "assignee": row.assignee,
                                     "due": row.due_at.isoformat()})
                return True

            try:
                if outbox.atomically(self.catalog_url, work):
                    self.logger.warning("review %s for %s is due %s", row.key, row.assignee,
                                        row.due_at)
                    reminded += 1
            except Exception:  # this row only: logged, and the next one goes on
                self.logger.exception("review %s: could not remind", row.key)
        return reminded

    def detail(self) -> dict[str, Any]:
        from sqlmodel import func, select

        from radflow.catalog.db import session_scope
        from radflow.catalog.models import Review
        from radflow.enums import ReviewStatus

        with session_scope(self.catalog_url) as session:
            waiting = session.exec(select(func.count()).select_from(Review).where(
                Review.status == ReviewStatus.OPEN)).one()
        return {"detail": f"{waiting} review(s) waiting"}


def main(argv: list[str] | None = None) -> int:
    from radflow.service import run_site_service

    return run_site_service("python -m radflow_review.keeper", lambda ctx: ReviewKeeper(
        ctx.catalog_url, ctx.prefect(), heartbeat=ctx.paths.run / "reviews.json"), argv)

if __name__ == "__main__":
    sys.exit(main())
