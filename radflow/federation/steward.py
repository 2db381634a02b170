"""The site agent's job state and what a data steward decides, shared by the CLI (`radflow site
jobs|releases`), the web app's Federation page and the agent. All of it is one row per job in
the catalog's ``federation_job`` table:

- **job acceptance** (job mode ``manual``, the default): a queued job runs only once accepted;
- **the run**: the site part's flow run, so that a restarted agent waits on the same run;
- **manual release** (policy ``manual_release: true``): after the egress gate, the release
  waits until a steward approves exactly that JSON (the approval names its sha256; a release
  that changed since is not covered) or declines it (the hub gets the code ``declined``,
  nothing else);
- **the outcome**: the release or refusal code is decided together with its audit event
  (``federation.released`` / ``federation.refused``) and an outbox entry for the post, in one
  transaction (:mod:`radflow.outbox`); the job is then ``sending`` until the hub acknowledges
  the post (the agent delivers it, and retries), and ``posted`` from then on: never decided or
  posted again.

Each decision is also an event in the site's audit log, committed with the decision.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from radflow import outbox
from radflow.catalog.db import session_scope
from radflow.catalog.models import FederationJob, OutboxEntry, utcnow
from radflow.errors import ConfigurationError
from radflow.faults import crash_point
from radflow.hashing import digest

JOB_ID = re.compile(r"[0-9a-f]{32}")
HASH = re.compile(r"sha256:[0-9a-f]{64}")
DECIDED = ("sending", "posted", "undeliverable")  # the outcome is decided: never again


def _check_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise ConfigurationError(f"{job_id!r} is not a job id",
                                 fix="see radflow site jobs list / radflow site releases list")
    return job_id


def _detached(session: Any, row: FederationJob | None) -> FederationJob | None:
    if row is not None:
        session.expunge(row)
    return row


def job_row(catalog_url: str, job_id: str) -> FederationJob | None:
    with session_scope(catalog_url) as session:
        return _detached(session, session.get(FederationJob, _check_id(job_id)))


def _update(catalog_url: str, job: dict[str, Any] | str, **values: Any) -> FederationJob:
    """The job's row, made if new, with ``values`` set."""
    job_id = _check_id(job if isinstance(job, str) else job["id"])
    with session_scope(catalog_url) as session:
        row = session.get(FederationJob, job_id) or FederationJob(id=job_id)
        if isinstance(job, dict):
            row.study, row.version = row.study or job.get("study"), \
                row.version or job.get("version")
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        return _detached(session, row)


def received(catalog_url: str, job: dict[str, Any]) -> FederationJob:
    """The agent saw the job (its row, made once; the agent asks every tick)."""
    row = job_row(catalog_url, job["id"])
    if row is not None and row.study is not None:
        return row
    try:
        return _update(catalog_url, job)
    except IntegrityError:  # a steward's acceptance made the row meanwhile
        return _update(catalog_url, job)


def is_accepted(catalog_url: str, job_id: str) -> bool:
    row = job_row(catalog_url, job_id)
    return row is not None and row.accepted_by is not None


def accept_job(catalog_url: str, job_id: str, actor: str) -> None:
    """Accept a queued job (with its audit event, in one transaction); the agent runs it on its
    next poll.

    Raises:
        ConfigurationError: the job's outcome is decided already.
    """
    _check_id(job_id)

    def work(session: Session) -> None:
        if session.get(FederationJob, job_id) is None:
            session.add(FederationJob(id=job_id))
            session.flush()
        changed = session.execute(update(FederationJob).where(
            FederationJob.id == job_id, col(FederationJob.state).not_in(DECIDED)).values(
            accepted_by=actor, updated_at=utcnow())).rowcount
        if not changed:
            row = session.get(FederationJob, job_id)
            raise ConfigurationError(f"job {job_id} is done already ({row.outcome})",
                                     fix="see radflow site jobs list")
        outbox.audit(session, actor=actor, action="federation.job_accepted",
                     subject=f"job:{job_id}", detail={})

    outbox.atomically(catalog_url, work)


def started(catalog_url: str, job: dict[str, Any], flow_run_id: str) -> None:
    _update(catalog_url, job, state="running", flow_run_id=flow_run_id)


def release_decision(catalog_url: str, job: dict[str, Any], release: dict[str, Any],
                     suppressed: list[str], policy: dict[str, Any] | None = None) -> str:
    """For the agent: ``pending`` (a steward decides), or ``declined`` / ``approved`` for rows
    decided before the outbox existed. A new (or changed) release is kept for the steward, with
    the policy summary its gate applied, and its arrival audited once (one transaction)."""
    row = job_row(catalog_url, job["id"])
    wanted = digest(release)
    if row is not None and row.decision == "declined":
        return "declined"
    if row is not None and row.decision == "approved" and row.decision_hash == wanted:
        return "approved"
    if row is None or row.release_hash != wanted:
        def work(session: Session) -> None:
            changed = session.execute(update(FederationJob).where(
                FederationJob.id == job["id"], col(FederationJob.state).not_in(DECIDED)).values(
                state="pending_release", release=json.dumps(release), release_hash=wanted,
                suppressed=json.dumps(suppressed),
                policy=json.dumps(policy) if policy is not None else None,
                updated_at=utcnow())).rowcount
            if changed:
                outbox.audit(session, actor="radflow:agent", action="federation.release_pending",
                             subject=f"job:{job['id']}",
                             detail={"hash": wanted, "study": job["study"]})

        outbox.atomically(catalog_url, work)
    return "pending"


def undecided(catalog_url: str, job_id: str) -> bool:
    """A release of this job waits and no steward has decided on it yet."""
    row = job_row(catalog_url, job_id)
    return row is not None and row.state == "pending_release" and (
        row.decision is None or (row.decision == "approved"
                                 and row.decision_hash != row.release_hash))


def _as_release(row: FederationJob) -> dict[str, Any]:
    return {"job": row.id, "study": row.study, "version": row.version, "hash": row.release_hash,
            "release": json.loads(row.release or "null"),
            "suppressed": json.loads(row.suppressed or "[]"),
            "approved": row.decision == "approved" and row.decision_hash == row.release_hash}


def pending_releases(catalog_url: str) -> list[dict[str, Any]]:
    """Releases waiting for a steward (newest first), each exactly as it would leave."""
    with session_scope(catalog_url) as session:
        rows = session.exec(select(FederationJob)
                            .where(FederationJob.state == "pending_release")
                            .order_by(FederationJob.updated_at.desc())).all()
        return [_as_release(r) for r in rows if r.decision != "declined"]


def pending_release(catalog_url: str, job_id: str) -> dict[str, Any]:
    row = job_row(catalog_url, job_id)
    if row is None or row.state != "pending_release" or row.decision == "declined":
        raise ConfigurationError(f"no release of job {job_id} waits for a decision",
                                 fix="see radflow site releases list")
    return _as_release(row)


def decide_release(catalog_url: str, job_id: str, actor: str, *, approve: bool,
                   expected_hash: str | None = None) -> dict[str, Any]:
    """Approve exactly the release with ``expected_hash`` (an approval always names it), or
    decline a waiting release. The decision, its audit events (``federation.release_approved``
    and ``federation.released``, or ``federation.release_declined`` and ``federation.refused``)
    and the post (an outbox entry the agent delivers) commit together. Returns the release
    decided on.

    Raises:
        ConfigurationError: no such release, an approval without a well-formed hash, the release
            changed since the steward saw it (another hash), or another steward decided it
            meanwhile.
    """
    if approve and not (expected_hash and HASH.fullmatch(expected_hash)):
        raise ConfigurationError(f"an approval of the release of job {job_id} names its hash "
                                 f"(got {expected_hash or 'none'!r})",
                                 fix="`radflow site releases show JOB` prints it: approve with "
                                     "--hash sha256:<64 hex>")
    row = pending_release(catalog_url, job_id)
    if expected_hash is not None and expected_hash != row["hash"]:
        raise ConfigurationError(f"the release of job {job_id} changed since you saw it",
                                 fix="look at it again (radflow site releases show) and decide")
    refusal = None if approve else "declined"
    release = row["release"] if approve else None

    def work(session: Session) -> None:
        changed = session.execute(update(FederationJob).where(
            FederationJob.id == job_id, FederationJob.state == "pending_release",
            FederationJob.release_hash == row["hash"]).values(
            state="sending", outcome=refusal or "released",
            decision="approved" if approve else "declined", decision_hash=row["hash"],
            decided_by=actor, updated_at=utcnow())).rowcount
        if not changed:
            raise ConfigurationError(f"the release of job {job_id} was decided or changed "
                                     "meanwhile", fix="see radflow site releases list")
        stored = session.get(FederationJob, job_id)
        outbox.audit(session, actor=actor, action="federation.release_approved" if approve
                     else "federation.release_declined", subject=f"job:{job_id}",
                     detail={"hash": row["hash"], "study": row["study"]})
        outcome(session, {"id": job_id, "study": row["study"], "version": row["version"]},
                actor=actor, release=release, refusal=refusal,
                suppressed=row["suppressed"] if approve else [],
                policy=json.loads(stored.policy) if stored.policy else None)

    outbox.atomically(catalog_url, work)
    crash_point("steward.after_decide")
    return row


def outcome(session: Session, job: dict[str, Any], *, actor: str, release: dict | None,
            refusal: str | None, suppressed: list[str], policy: dict[str, Any] | None,
            detail: str | None = None) -> OutboxEntry:
    """Inside the caller's transaction (whose guarding write made the job ``sending``): the
    audit event of a job's outcome and the outbox entry that posts it."""
    outbox.audit(session, actor=actor,
                 action="federation.released" if release is not None else "federation.refused",
                 subject=f"job:{job['id']}",
                 detail={"version": job["version"], "study": job["study"], "refusal": refusal,
                         "release": release, "suppressed": suppressed,
                         **({"detail": detail} if detail else {})})
    return outbox.add(session, "hub.post", f"job:{job['id']}", job["id"],
                      {"release": release, "refusal": refusal, "policy": policy})


def decide(catalog_url: str, job: dict[str, Any], *, actor: str, release: dict | None = None,
           refusal: str | None = None, suppressed: list[str] | None = None,
           policy: dict[str, Any] | None = None, detail: str | None = None
           ) -> OutboxEntry | None:
    """The agent's decision on a job: ``sending`` with its outcome, the audit event and the
    post's outbox entry, in one transaction. None when the job was decided before (by a
    steward, or by this agent before it was restarted)."""
    _check_id(job["id"])

    def work(session: Session) -> OutboxEntry | None:
        changed = session.execute(update(FederationJob).where(
            FederationJob.id == job["id"], col(FederationJob.state).not_in(DECIDED)).values(
            state="sending", outcome=refusal or "released", updated_at=utcnow())).rowcount
        if not changed:
            return None
        return outcome(session, job, actor=actor, release=release, refusal=refusal,
                       suppressed=suppressed or [], policy=policy, detail=detail)

    return outbox.atomically(catalog_url, work)


def on_posted(session: Session, entry: OutboxEntry) -> None:
    """The hub answered the post of ``entry`` (same transaction as the answer): the job is
    ``posted`` (never posted again; the release is dropped from the row, the audit log keeps
    what left), or ``undeliverable`` when the hub refused it for good."""
    row = session.get(FederationJob, entry.target)
    if row is None:
        return
    if entry.state == "acknowledged":
        row.state, row.posted_at, row.release, row.suppressed = "posted", utcnow(), None, None
    else:  # e.g. the hub's check found an invalid release (HTTP 422) or too large a body (413)
        row.state = "undeliverable"
        outbox.audit(session, actor="radflow:agent", action="federation.undeliverable",
                     subject=entry.subject, detail={"study": row.study, "version": row.version,
                                                    "hub": (entry.answer or "")[:300]})
    row.updated_at = utcnow()
    session.add(row)


def jobs(catalog_url: str, limit: int = 200) -> list[FederationJob]:
    """The site's jobs, newest first."""
    with session_scope(catalog_url) as session:
        rows = session.exec(select(FederationJob).order_by(FederationJob.received_at.desc())
                            .limit(limit)).all()
        for row in rows:
            session.expunge(row)
        return list(rows)
