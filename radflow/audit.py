"""The site's audit log: every approval, decision, release and refusal, append-only and
hash-chained, in the site catalog (invariant 5).

Each event's hash is the SHA-256 of its canonical content (sequence number, time, actor,
action, subject, detail) and the previous event's hash, so changing, removing or reordering any
event breaks every hash after it: :func:`verify` finds the first broken one. Sequence numbers are
consecutive (a concurrent writer that takes the same number retries with the next), and the last
hash is the log's head: a data steward who records it can later prove that nothing was appended
before it was cut off.

Example:
    ```python
    from radflow.audit import record, verify

    record(catalog_url, actor="dr-a", action="review.decided", subject="result:12",
           detail={"decision": "accept"})
    print(verify(catalog_url))   # AuditCheck(ok=True, events=1, head='sha256:...')
    ```
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent
from radflow.errors import ConfigurationError
from radflow.hashing import canonical_json, digest

GENESIS = "sha256:" + "0" * 64
ATTEMPTS = 20


def _iso(time: datetime) -> str:
    return (time if time.tzinfo else time.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def event_hash(seq: int, time: datetime, actor: str, action: str, subject: str, detail: str,
               prev_hash: str) -> str:
    """The chain hash of one event (its content and the previous event's hash)."""
    return digest({"seq": seq, "time": _iso(time), "actor": actor, "action": action,
                   "subject": subject, "detail": json.loads(detail), "prev": prev_hash})


def record(catalog_url: str, *, actor: str, action: str, subject: str,
           detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event (its own transaction).

    Raises:
        ConfigurationError: an empty actor, action or subject.
    """
    if not (actor and action and subject):
        raise ConfigurationError("an audit event needs an actor, an action and a subject",
                                 fix="say who did what to which subject")
    body = canonical_json(detail or {})
    for _ in range(ATTEMPTS):
        try:
            with session_scope(catalog_url) as session:
                return append(session, actor=actor, action=action, subject=subject, body=body)
        except IntegrityError:  # another writer took this sequence number: chain after it
            continue
    raise ConfigurationError(f"could not append to the audit log after {ATTEMPTS} attempts",
                             fix="check the catalog database (is it locked?)")


def append(session: Session, *, actor: str, action: str, subject: str, body: str) -> AuditEvent:
    """Append inside an open session (the caller's transaction: the event commits with it)."""
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    now = datetime.now(UTC)
    event = AuditEvent(seq=seq, time=now, actor=actor, action=action, subject=subject,
                       detail=body, prev_hash=prev,
                       hash=event_hash(seq, now, actor, action, subject, body, prev))
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class AuditCheck:
    """What :func:`verify` found."""

    ok: bool
    events: int
    head: str  # the last event's hash (GENESIS for an empty log)
    broken_at: int | None = None  # the first event that does not check out
    reason: str | None = None


def events(catalog_url: str, since: int = 0) -> Iterator[AuditEvent]:
    """The events in order (from sequence number ``since + 1``)."""
    with session_scope(catalog_url) as session:
        yield from session.exec(select(AuditEvent).where(AuditEvent.seq > since)
                                .order_by(col(AuditEvent.seq)))


def verify(catalog_url: str) -> AuditCheck:
    """Recompute the chain: every hash, every link, no gap in the sequence."""
    return verify_events(events(catalog_url))


def verify_events(ordered: Iterable[AuditEvent]) -> AuditCheck:
    """:func:`verify` over events read by the caller, in sequence order (e.g. from a catalog
    not yet migrated to this radflow's schema: `radflow site upgrade`)."""
    prev, expected, count = GENESIS, 1, 0
    for event in ordered:
        count += 1
        if event.seq != expected:
            return AuditCheck(False, count, prev, expected,
                              f"event {expected} is missing (the next is {event.seq})")
        if event.prev_hash != prev:
            return AuditCheck(False, count, prev, event.seq,
                              "its link to the previous event does not match")
        again = event_hash(event.seq, event.time, event.actor, event.action, event.subject,
                           event.detail, event.prev_hash)
        if again != event.hash:
            return AuditCheck(False, count, prev, event.seq, "its content does not match its hash")
        prev, expected = event.hash, expected + 1
    return AuditCheck(True, count, prev)


def export_lines(catalog_url: str) -> Iterator[str]:
    """The log as JSON lines (each event with its hashes), for a data steward to keep."""
    for event in events(catalog_url):
        yield json.dumps({"seq": event.seq, "time": _iso(event.time), "actor": event.actor,
                          "action": event.action, "subject": event.subject,
                          "detail": json.loads(event.detail), "prev_hash": event.prev_hash,
                          "hash": event.hash}, sort_keys=True)


def count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEvent)).one()
