"""The review keeper: a site service that expires reviews past their due time (resuming their
runs with an ``expired`` decision, so the case follows its policy and nothing waits forever) and
reminds the assignees of reviews half-way there (a log line and an audit event).

    python -m radflow_review.keeper --site NAME      (started by `radflow site up`)
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radflow.service import ServiceLoop

EXPIRY_ACTOR = "radflow:expiry"


class ReviewKeeper(ServiceLoop):
    """Expire and remind, every few seconds."""

    def __init__(self, catalog_url: str, prefect: Any, heartbeat: Path | None = None,
                 interval: float = 2.0) -> None:
        super().__init__("reviews", heartbeat, interval, dependencies=("prefect",))
        self.catalog_url = catalog_url
        self.prefect = prefect

    def tick(self) -> None:
        self.remind()
        self.guard("prefect", self.expire)

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
            return list(session.exec(query))

    def expire(self) -> int:
        """Resume every open review past due with an ``expired`` decision; returns how many."""
        from radflow.errors import SiteError

        expired = 0
        for row in self._due("due_at"):
            try:
                self.prefect.resume(row.flow_run_id, {
                    "decision": "expired", "reviewer": EXPIRY_ACTOR,
                    "comment": f"no decision by {row.due_at:%Y-%m-%d %H:%M} UTC"})
                expired += 1
                self.logger.info("review %s expired: run %s resumed", row.key, row.flow_run_id)
            except SiteError as exc:  # resumed meanwhile, or its run is gone: close it here
                self._close(row, exc.message)
        return expired

    def _close(self, row: Any, reason: str) -> None:
        from radflow.audit import record
        from radflow.catalog.db import session_scope
        from radflow.catalog.models import Review
        from radflow.enums import ReviewStatus

        state = self.prefect.flow_run(row.flow_run_id)
        if not state.is_final:
            return  # it will be resumed or will end: look again next time
        with session_scope(self.catalog_url) as session:
            fresh = session.get(Review, row.id)
            if fresh.status != ReviewStatus.OPEN:
                return
            fresh.status, fresh.decision = ReviewStatus.EXPIRED, "expired"
            fresh.reviewer, fresh.decided_at = EXPIRY_ACTOR, datetime.now(UTC)
            fresh.comment = f"its run ended {state.state.lower()} before a decision: {reason}"
            session.add(fresh)
        record(self.catalog_url, actor=EXPIRY_ACTOR, action="review.expired",
               subject=f"review:{row.key}",
               detail={"result": row.result_id, "run_state": state.state})

    def remind(self) -> int:
        """Remind once for every open review past its reminder time; returns how many."""
        from radflow.audit import record
        from radflow.catalog.db import session_scope
        from radflow.catalog.models import Review

        reminded = 0
        for row in self._due("remind_at"):
            self.logger.warning("review %s for %s is due %s", row.key, row.assignee, row.due_at)
            record(self.catalog_url, actor="radflow:reviews", action="review.reminded",
                   subject=f"review:{row.key}",
                   detail={"result": row.result_id, "assignee": row.assignee,
                           "due": row.due_at.isoformat()})
            with session_scope(self.catalog_url) as session:
                fresh = session.get(Review, row.id)
                fresh.reminded_at = datetime.now(UTC)
                session.add(fresh)
            reminded += 1
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
