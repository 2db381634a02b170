"""Effects that leave a site process go through an outbox (DESIGN.md): the state change, its
audit event and an outbox entry for the effect commit in ONE transaction; then the effect is
delivered, and retried until its receiver acknowledges. Receivers are idempotent, so a delivery
repeated after a crash (sent, but the acknowledgement not yet recorded) is harmless.

Two kinds of effect, each with one deliverer:

* ``hub.post``: a job's release or refusal, posted to the hub. Only the site agent delivers
  them (right after it decides, and on every tick for what is pending: also the releases a data
  steward approves on the web page or the CLI), because only the agent talks to the hub. The
  hub takes a job's result once and answers ``already`` to the same post again.
* ``prefect.resume``: a review decision that resumes a suspended case run. The request that
  made the decision (the worklist's web request, `radflow review decide`, the review keeper's
  expiry) delivers it at once, so that the clinician's run resumes without a delay; the review
  keeper, a service that runs anyway, retries what is still pending after
  :data:`RETRY_GRACE` seconds (the request died, Prefect was away). A run that is resumed
  already answers "not paused": that is an acknowledgement (``already resumed``), not an error.

Example:
    ```python
    from radflow import outbox

    def decide(session):
        ...                                          # the state change (a conditional UPDATE)
        outbox.audit(session, actor="dr-a", action="review.decided", subject="review:k", detail={})
        return outbox.add(session, "prefect.resume", "review:k", run_id, {"decision": "accept"})

    entry = outbox.atomically(catalog_url, decide)   # all three, or none
    outbox.deliver_one(catalog_url, entry, send)     # then the effect
    ```
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from requests import RequestException
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow.audit import ATTEMPTS, append
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, OutboxEntry, utcnow
from radflow.catalog.models.base import as_utc
from radflow.errors import ConfigurationError, RadflowError, is_transient
from radflow.faults import crash_point
from radflow.hashing import canonical_json

KINDS = ("hub.post", "hub.access", "prefect.resume")
RETRY_GRACE = 5.0  # seconds a retrier leaves a new entry to the request that made it
MAX_BACKOFF = 60.0  # seconds between two attempts at most
T = TypeVar("T")
Sender = Callable[[OutboxEntry], str]
OnDone = Callable[[Session, OutboxEntry], None]
logger = logging.getLogger(__name__)


class Undeliverable(RadflowError):
    """The receiver refused an effect for good (a run that ended before it could be resumed, a
    job whose deadline passed): the entry is closed as ``refused``, never retried."""


def atomically(catalog_url: str, work: Callable[[Session], T]) -> T:
    """Run ``work(session)`` in one transaction and commit it; the whole transaction again when
    another writer took the audit log's next sequence number meanwhile (the unique key says so).

    ``work`` should make its guarding write first (e.g. ``UPDATE ... WHERE state = 'open'``): on
    SQLite that takes the write lock, so what it reads afterwards cannot change under it.

    Raises:
        ConfigurationError: the audit log stayed contended (the database is locked).
    """
    for _ in range(ATTEMPTS):
        try:
            with session_scope(catalog_url) as session:
                return work(session)
        except IntegrityError:  # the audit log's next number was taken: run it all again
            continue
    raise ConfigurationError(f"could not commit a decision after {ATTEMPTS} attempts",
                             fix="check the catalog database (is it locked?)")


def audit(session: Session, *, actor: str, action: str, subject: str,
          detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append an audit event inside the caller's transaction (it commits with the change)."""
    if not (actor and action and subject):
        raise ConfigurationError("an audit event needs an actor, an action and a subject",
                                 fix="say who did what to which subject")
    return append(session, actor=actor, action=action, subject=subject,
                  body=canonical_json(detail or {}))


def add(session: Session, kind: str, subject: str, target: str,
        payload: dict[str, Any]) -> OutboxEntry:
    """An effect to deliver, inside the caller's transaction.

    Raises:
        ConfigurationError: an unknown kind.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"unknown outbox kind {kind!r}", fix=f"use one of {KINDS}")
    entry = OutboxEntry(kind=kind, subject=subject, target=target,
                        payload=canonical_json(payload))
    session.add(entry)
    session.flush()
    session.refresh(entry)
    session.expunge(entry)
    return entry


def payload(entry: OutboxEntry) -> dict[str, Any]:
    return json.loads(entry.payload)


def entries(catalog_url: str, *, kind: str | None = None, subject: str | None = None,
            state: str | None = None) -> list[OutboxEntry]:
    """Entries, oldest first (optionally of one kind, subject or state)."""
    query = select(OutboxEntry).order_by(col(OutboxEntry.id))
    for column, value in (("kind", kind), ("subject", subject), ("state", state)):
        if value is not None:
            query = query.where(getattr(OutboxEntry, column) == value)
    with session_scope(catalog_url) as session:
        found = list(session.exec(query))
        for entry in found:
            session.expunge(entry)
        return found


def due(entry: OutboxEntry, now: datetime, grace: float = 0.0) -> bool:
    """Whether a retrier should try ``entry`` now: older than ``grace`` seconds, and its last
    attempt longer ago than its back-off (1, 2, 4 ... 60 s after each failed attempt)."""
    if now - as_utc(entry.created_at) < timedelta(seconds=grace):
        return False
    if entry.last_attempt_at is None:
        return True
    wait = min(MAX_BACKOFF, 2.0 ** max(0, entry.attempts - 1))
    return now - as_utc(entry.last_attempt_at) >= timedelta(seconds=wait)


def deliver(catalog_url: str, kind: str, send: Sender, *, on_done: OnDone | None = None,
            grace: float = 0.0, log: logging.Logger | None = None,
            retry_now: bool = False) -> int:
    """Deliver every pending entry of ``kind`` that is due (:func:`due`; with ``retry_now``,
    whatever its back-off: the receiver is back), oldest first; one that fails is recorded
    (attempts, last error) and logged, and the others go on. Returns how many were
    acknowledged or refused for good.

    Raises:
        Exception: a transient failure (:func:`radflow.errors.is_transient`: the receiver is
            away), after it was recorded: the others wait for the next round, and the caller's
            :meth:`~radflow.service.ServiceLoop.guard` marks the receiver down.
    """
    log = log or logger
    now = datetime.now(UTC)
    finished = 0
    for entry in entries(catalog_url, kind=kind, state="pending"):
        if not (retry_now or due(entry, now, grace)):
            continue
        try:
            deliver_one(catalog_url, entry, send, on_done)
            finished += 1
        except (RadflowError, OSError, RequestException) as exc:  # recorded; the next goes on
            if is_transient(exc):
                raise
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if message != entry.last_error:
                log.warning("%s %s (%s): not delivered yet: %s", kind, entry.target,
                            entry.subject, message)
        except Exception:  # a bug: recorded on the entry, logged; the next one goes on
            log.exception("%s %s (%s): delivery failed", kind, entry.target, entry.subject)
    return finished


def deliver_one(catalog_url: str, entry: OutboxEntry, send: Sender,
                on_done: OnDone | None = None) -> OutboxEntry:
    """Send one entry and record the receiver's answer (with ``on_done(session, entry)`` in the
    same transaction). Returns the entry as recorded.

    Raises:
        Exception: whatever ``send`` raised (other than :class:`Undeliverable`): the entry stays
            pending with the error recorded, for a retrier.
    """
    crash_point("outbox.before_send")
    try:
        answer, state = send(entry), "acknowledged"
    except Undeliverable as exc:
        answer, state = exc.message, "refused"
    except Exception as exc:
        _attempted(catalog_url, entry.id, getattr(exc, "message", None)
                   or f"{type(exc).__name__}: {exc}")
        raise
    crash_point("outbox.after_send")

    def finish(session: Session) -> OutboxEntry:
        fresh = session.get(OutboxEntry, entry.id)
        if fresh.state == "pending":  # (another deliverer may have recorded it meanwhile)
            fresh.state, fresh.answer, fresh.done_at = state, answer, utcnow()
            fresh.attempts += 1
            fresh.last_attempt_at = fresh.done_at
            session.add(fresh)
            session.flush()
            if on_done is not None:
                on_done(session, fresh)
        session.refresh(fresh)
        session.expunge(fresh)
        return fresh

    done = atomically(catalog_url, finish)
    if state == "refused":
        logger.warning("%s %s (%s) refused for good: %s", entry.kind, entry.target,
                       entry.subject, answer)
    return done


def _attempted(catalog_url: str, entry_id: int | None, error: str) -> None:
    with session_scope(catalog_url) as session:
        fresh = session.get(OutboxEntry, entry_id)
        if fresh is not None and fresh.state == "pending":
            fresh.attempts += 1
            fresh.last_attempt_at, fresh.last_error = utcnow(), error[:2000]
            session.add(fresh)
