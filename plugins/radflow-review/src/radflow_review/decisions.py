"""Recording a review decision and resuming its case run, through the site's outbox.

A decision (from the worklist, `radflow review decide`, or the review keeper's expiry) is
recorded on the review row (status, decision, reviewer, time), with its audit event
(``review.decided`` or ``review.expired``) and an outbox entry that resumes the suspended case
run, in one transaction. Only one decision wins: the row changes only while it is open, and a
second submit is told who decided it and when (:class:`AlreadyDecided`). The worklist shows the
case as decided from that moment.

Who resumes: the request that decided, right after its commit (the clinician's run goes on at
once); and the review keeper, a service that runs anyway, retries every entry still pending
after :data:`radflow.outbox.RETRY_GRACE` seconds (the request died between commit and resume,
or Prefect was away). A run that is not paused any more (resumed already, or ended) is an
acknowledgement, so a resume sent twice is harmless. The resumed run applies the recorded
decision once (:func:`radflow_review.step.apply_decision`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from radflow import outbox
from radflow.catalog.models import OutboxEntry, Review, utcnow
from radflow.catalog.models.base import as_utc
from radflow.enums import ReviewStatus
from radflow.errors import ConfigurationError
from radflow.faults import crash_point
from radflow.prefect_api import NotPaused, ResumeRefused
from radflow_review.decision import ReviewDecision

logger = logging.getLogger("radflow.reviews")


class AlreadyDecided(ConfigurationError):
    """A decision on a review that is decided (or expired) already."""

    def __init__(self, review_id: int | None, row: Any) -> None:
        when = as_utc(row.decided_at)
        at = f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else "an unknown time"
        super().__init__(f"review {review_id if review_id is not None else row.key} was "
                         f"already decided by {row.reviewer} at {at} ({row.decision})",
                         fix="nothing to do: its case run takes that decision")


def _record(session: Session, where: Any, decision: ReviewDecision) -> tuple[bool, Review]:
    """Record ``decision`` on the review ``where`` selects if it is still open, with its audit
    event (the caller's transaction); (whether it was recorded now, the row)."""
    status = ReviewStatus.EXPIRED if decision.decision == "expired" else ReviewStatus.DECIDED
    changed = session.execute(update(Review).where(where, Review.status == ReviewStatus.OPEN)
                              .values(status=status, decision=decision.decision,
                                      reviewer=decision.reviewer, comment=decision.comment,
                                      corrected_seg_uid=decision.corrected_seg_uid,
                                      decided_at=utcnow())).rowcount
    row = session.exec(select(Review).where(where)).first()
    if row is None:
        raise ConfigurationError("there is no such review", fix="see `radflow review list`")
    if changed:
        outbox.audit(session, actor=decision.reviewer,
                     action="review.expired" if decision.decision == "expired"
                     else "review.decided", subject=f"review:{row.key}",
                     detail={"result": row.result_id, "decision": decision.decision,
                             "corrected_seg_uid": decision.corrected_seg_uid})
    return bool(changed), row


def record_decision(catalog_url: str, review_id: int, decision: ReviewDecision) -> OutboxEntry:
    """Record a decision on an open review, its audit event and the resume of its case run
    (an outbox entry), in one transaction; returns the entry (deliver it with :func:`deliver`).

    Raises:
        AlreadyDecided: the review was decided before (the message says by whom and when).
        ConfigurationError: there is no such review.
    """
    def work(session: Session) -> OutboxEntry:
        recorded, row = _record(session, Review.id == review_id, decision)
        if not recorded:
            raise AlreadyDecided(review_id, row)
        return outbox.add(session, "prefect.resume", f"review:{row.key}", row.flow_run_id,
                          decision.model_dump(mode="json"))

    entry = outbox.atomically(catalog_url, work)
    crash_point("review.after_decide")
    return entry


def ensure_recorded(catalog_url: str, key: str, decision: ReviewDecision) -> ReviewDecision:
    """For the resumed run: the decision recorded on the review (the one that counts). A run
    resumed from Prefect's UI finds none: its input is recorded here, with its audit event."""
    def work(session: Session) -> ReviewDecision:
        _, row = _record(session, Review.key == key, decision)
        return ReviewDecision(decision=row.decision, reviewer=row.reviewer,
                              comment=row.comment or "", corrected_seg_uid=row.corrected_seg_uid)

    recorded = outbox.atomically(catalog_url, work)
    if recorded.model_dump() != decision.model_dump():
        logger.warning("review %s: the run was resumed with %s by %s, but %s by %s was recorded "
                       "first: that decision applies", key, decision.decision, decision.reviewer,
                       recorded.decision, recorded.reviewer)
    return recorded


def sender(prefect: Any) -> outbox.Sender:
    """The outbox's sender of resumes on a site's Prefect (:class:`radflow.prefect_api.PrefectApi`).

    A run that is not paused is acknowledged (``already resumed``); a run Prefect does not know,
    or input it refuses, is :class:`radflow.outbox.Undeliverable`.
    """
    def send(entry: OutboxEntry) -> str:
        try:
            prefect.resume(entry.target, outbox.payload(entry))
        except NotPaused as exc:
            return f"already resumed (the run is {exc.state.lower()})"
        except ResumeRefused as exc:
            raise outbox.Undeliverable(exc.message, fix=exc.fix) from exc
        return "resumed"

    return send


def deliver(catalog_url: str, entry: OutboxEntry, prefect: Any) -> OutboxEntry:
    """Resume now (the deciding request, right after its commit).

    Raises:
        RadflowError: Prefect did not answer: the entry stays pending for the keeper.
    """
    return outbox.deliver_one(catalog_url, entry, sender(prefect))


def retry(catalog_url: str, prefect: Any, log: logging.Logger | None = None) -> int:
    """Deliver the resumes still pending (the review keeper's retrier); returns how many were
    finished."""
    return outbox.deliver(catalog_url, "prefect.resume", sender(prefect),
                          grace=outbox.RETRY_GRACE, log=log or logger)
