"""The outbox on a catalog of its own (no services; SQLite and PostgreSQL): a decision, its
audit event and its effect commit together or not at all; an effect that fails stays pending
with its error and backs off; a receiver's final refusal closes it; a job or a review is
decided once, also when decisions come at the same moment; a crash point kills its process
only when asked to."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ENGINES, new_database
from sqlmodel import select

from radflow import outbox
from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, OutboxEntry, Review, utcnow
from radflow.errors import ConfigurationError, SiteError
from radflow.federation import steward

JOB = {"id": "a" * 32, "study": "s1", "version": "sha256:" + "1" * 64, "params": {}}


@pytest.fixture(params=ENGINES)
def url(request, tmp_path: Path) -> str:
    """A new catalog, on each engine."""
    return new_database(request, request.param, tmp_path, "outbox")


def events(url: str, subject: str) -> list[str]:
    with session_scope(url) as session:
        return [e.action for e in session.exec(select(AuditEvent).where(
            AuditEvent.subject == subject).order_by(AuditEvent.seq))]


def test_a_decision_and_its_effect_commit_together_or_not_at_all(url: str) -> None:
    def fails(session):
        outbox.audit(session, actor="dr-a", action="review.decided", subject="review:k")
        outbox.add(session, "prefect.resume", "review:k", "run-1", {"decision": "accept"})
        raise ConfigurationError("the change did not hold", fix="-")

    with pytest.raises(ConfigurationError, match="did not hold"):
        outbox.atomically(url, fails)
    assert events(url, "review:k") == [] and outbox.entries(url) == []

    def works(session):
        outbox.audit(session, actor="dr-a", action="review.decided", subject="review:k")
        return outbox.add(session, "prefect.resume", "review:k", "run-1", {"decision": "accept"})

    entry = outbox.atomically(url, works)
    assert events(url, "review:k") == ["review.decided"]
    assert [e.id for e in outbox.entries(url, state="pending")] == [entry.id]
    with pytest.raises(ConfigurationError, match="unknown outbox kind"):
        outbox.atomically(url, lambda s: outbox.add(s, "email", "x", "y", {}))


def test_a_failed_effect_stays_pending_backs_off_and_a_refusal_closes_it(url: str) -> None:
    entry = outbox.atomically(url, lambda s: outbox.add(s, "hub.post", "job:1", "1", {"n": 1}))

    def away(_entry):
        raise SiteError("the hub did not answer", fix="-")

    with pytest.raises(SiteError):
        outbox.deliver_one(url, entry, away)
    (pending,) = outbox.entries(url)
    assert (pending.state, pending.attempts, pending.last_error) == ("pending", 1,
                                                                    "the hub did not answer")
    now = utcnow()
    assert not outbox.due(pending, now)  # backs off...
    assert outbox.due(pending, now + timedelta(seconds=2))  # ... for a while
    assert not outbox.due(pending, now + timedelta(seconds=2), grace=3600)  # new: left alone
    assert outbox.deliver(url, "hub.post", away) == 0  # not due yet: not tried again
    assert outbox.entries(url)[0].attempts == 1

    def refuses(_entry):
        raise outbox.Undeliverable("the deadline passed", fix="-")

    done = outbox.deliver_one(url, pending, refuses)
    assert (done.state, done.answer, done.attempts) == ("refused", "the deadline passed", 2)
    assert done.done_at is not None and outbox.entries(url, state="pending") == []
    again = outbox.deliver_one(url, pending, lambda _e: "recorded")  # recorded once: kept
    assert again.state == "refused"


def test_a_job_is_decided_once_and_posted_once(url: str) -> None:
    steward.received(url, JOB)
    entry = steward.decide(url, JOB, actor="radflow:agent", release={"n": 12},
                           suppressed=[], policy={"min_cohort": 10})
    assert steward.job_row(url, JOB["id"]).state == "sending"
    assert steward.decide(url, JOB, actor="radflow:agent", refusal="not_approved") is None
    assert events(url, f"job:{JOB['id']}") == ["federation.released"]
    assert outbox.payload(entry) == {"release": {"n": 12}, "refusal": None,
                                     "policy": {"min_cohort": 10}}
    done = outbox.deliver_one(url, entry, lambda _e: "recorded", steward.on_posted)
    row = steward.job_row(url, JOB["id"])
    assert (done.state, done.answer) == ("acknowledged", "recorded")
    assert (row.state, row.outcome, row.release) == ("posted", "released", None)
    with pytest.raises(ConfigurationError, match="done already"):
        steward.accept_job(url, JOB["id"], "cli:steward")
    assert verify(url).ok


def test_a_stewards_decision_is_taken_once(url: str) -> None:
    steward.received(url, JOB)
    assert steward.release_decision(url, JOB, {"n": 20}, ["x"], {"min_cell": 5}) == "pending"
    waiting = steward.pending_release(url, JOB["id"])
    with pytest.raises(ConfigurationError, match="changed since you saw it"):
        steward.decide_release(url, JOB["id"], "cli:a", approve=True,
                               expected_hash="sha256:" + "0" * 64)
    steward.decide_release(url, JOB["id"], "cli:a", approve=True, expected_hash=waiting["hash"])
    with pytest.raises(ConfigurationError, match="no release of job"):
        steward.decide_release(url, JOB["id"], "cli:b", approve=False)
    assert events(url, f"job:{JOB['id']}") == ["federation.release_pending",
                                               "federation.release_approved",
                                               "federation.released"]
    (entry,) = outbox.entries(url, subject=f"job:{JOB['id']}")
    assert outbox.payload(entry) == {"release": {"n": 20}, "refusal": None,
                                     "policy": {"min_cell": 5}}
    assert steward.pending_releases(url) == []


def test_a_review_is_decided_once(url: str) -> None:
    from radflow_review.decision import ReviewDecision
    from radflow_review.decisions import AlreadyDecided, ensure_recorded, record_decision

    with session_scope(url) as session:
        row = Review(key="review-k", flow_run_id="run-1", source_series_uid="1.2",
                     assignee="role:radiologist", due_at=utcnow() + timedelta(hours=1))
        session.add(row)
        session.flush()
        review_id = row.id
    first = ReviewDecision(decision="reject", reviewer="dr-a", comment="motion")
    entry = record_decision(url, review_id, first)
    assert (entry.kind, entry.target, outbox.payload(entry)["decision"]) == (
        "prefect.resume", "run-1", "reject")
    with pytest.raises(AlreadyDecided, match=r"already decided by dr-a at \d{4}-\d\d-\d\d "
                                             r"\d\d:\d\d:\d\d UTC \(reject\)"):
        record_decision(url, review_id, ReviewDecision(decision="accept", reviewer="dr-b"))
    # the resumed run (even one resumed from Prefect's UI with other input) applies the first
    assert ensure_recorded(url, "review-k", ReviewDecision(decision="accept",
                                                           reviewer="prefect-ui")) == first
    assert events(url, "review:review-k") == ["review.decided"]
    with session_scope(url) as session:
        stored = session.exec(select(Review)).one()
        assert (stored.status, stored.decision, stored.reviewer) == ("decided", "reject", "dr-a")
        assert session.exec(select(OutboxEntry)).one().state == "pending"


def test_a_crash_point_kills_only_when_named(tmp_path: Path) -> None:
    code = "from radflow.faults import crash_point; crash_point('a.b'); print('alive')"
    for wanted, expected in ((None, 0), ("x.y", 0), ("x.y,a.b", -9)):
        env = {"RADFLOW_HOME": str(tmp_path)} | ({"RADFLOW_CRASH_AT": wanted} if wanted else {})
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == expected, proc.stderr
        assert ("alive" in proc.stdout) == (expected == 0)


def test_decisions_submitted_at_once_one_wins(url: str) -> None:
    """Eight decisions on one review at the same moment (a double click, two clinicians): one
    is recorded, with one audit event and one resume; the others are told who decided."""
    from concurrent.futures import ThreadPoolExecutor

    from radflow_review.decision import ReviewDecision
    from radflow_review.decisions import AlreadyDecided, record_decision

    with session_scope(url) as session:
        row = Review(key="review-race", flow_run_id="run-2", source_series_uid="1.3",
                     assignee="role:radiologist", due_at=utcnow() + timedelta(hours=1))
        session.add(row)
        session.flush()
        review_id = row.id

    def submit(n: int) -> str:
        try:
            record_decision(url, review_id, ReviewDecision(decision="accept", reviewer=f"dr-{n}"))
            return "recorded"
        except AlreadyDecided as exc:
            return exc.message

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    assert answers.count("recorded") == 1
    with session_scope(url) as session:
        winner = session.exec(select(Review)).one().reviewer
    assert all(f"already decided by {winner} at" in a for a in answers if a != "recorded")
    assert events(url, "review:review-race") == ["review.decided"]
    assert len(outbox.entries(url, subject="review:review-race")) == 1
    assert verify(url).ok
