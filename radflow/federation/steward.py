"""The site agent's job state and what a data steward decides, shared by the CLI (`radflow site
jobs|releases`), the web app's Federation page and the agent. All of it is one row per job in
the catalog's ``federation_job`` table:

- **job acceptance** (job mode ``manual``, the default): a queued job runs only once accepted;
- **the run**: the site part's flow run, so that a restarted agent waits on the same run;
- **manual release** (policy ``manual_release: true``): after the egress gate, the release
  waits until a steward approves exactly that JSON (the approval names its sha256; a release
  that changed since is not covered) or declines it (the hub gets the code ``declined``,
  nothing else);
- **the post**: once the hub has the result, the job is ``posted`` and never posted again.

Each decision is also an event in the site's audit log.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import FederationJob, utcnow
from radflow.errors import ConfigurationError
from radflow.hashing import digest

JOB_ID = re.compile(r"[0-9a-f]{32}")
HASH = re.compile(r"sha256:[0-9a-f]{64}")


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
    """The agent saw the job (its row, made once)."""
    return _update(catalog_url, job)


def is_accepted(catalog_url: str, job_id: str) -> bool:
    row = job_row(catalog_url, job_id)
    return row is not None and row.accepted_by is not None


def accept_job(catalog_url: str, job_id: str, actor: str) -> None:
    """Accept a queued job (recorded in the audit log); the agent runs it on its next poll."""
    from radflow.audit import record

    row = job_row(catalog_url, job_id)
    if row is not None and row.state == "posted":
        raise ConfigurationError(f"job {job_id} is done already ({row.outcome})",
                                 fix="see radflow site jobs list")
    _update(catalog_url, job_id, accepted_by=actor)
    record(catalog_url, actor=actor, action="federation.job_accepted", subject=f"job:{job_id}",
           detail={})


def started(catalog_url: str, job: dict[str, Any], flow_run_id: str) -> None:
    _update(catalog_url, job, state="running", flow_run_id=flow_run_id)


def release_decision(catalog_url: str, job: dict[str, Any], release: dict[str, Any],
                     suppressed: list[str]) -> str:
    """For the agent: ``approved``, ``declined`` or ``pending`` for this exact release. A new
    (or changed) release is kept for the steward and its arrival audited once."""
    from radflow.audit import record

    row = job_row(catalog_url, job["id"])
    wanted = digest(release)
    if row is not None and row.decision == "declined":
        return "declined"
    if row is not None and row.decision == "approved" and row.decision_hash == wanted:
        return "approved"
    if row is None or row.release_hash != wanted:
        _update(catalog_url, job, state="pending_release", release=json.dumps(release),
                release_hash=wanted, suppressed=json.dumps(suppressed))
        record(catalog_url, actor="radflow:agent", action="federation.release_pending",
               subject=f"job:{job['id']}", detail={"hash": wanted, "study": job["study"]})
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
    decline a waiting release; audited. Returns the release decided on.

    Raises:
        ConfigurationError: no such release, an approval without a well-formed hash, or the
            release changed since the steward saw it (another hash).
    """
    from radflow.audit import record

    if approve and not (expected_hash and HASH.fullmatch(expected_hash)):
        raise ConfigurationError(f"an approval of the release of job {job_id} names its hash "
                                 f"(got {expected_hash or 'none'!r})",
                                 fix="`radflow site releases show JOB` prints it: approve with "
                                     "--hash sha256:<64 hex>")
    row = pending_release(catalog_url, job_id)
    if expected_hash is not None and expected_hash != row["hash"]:
        raise ConfigurationError(f"the release of job {job_id} changed since you saw it",
                                 fix="look at it again (radflow site releases show) and decide")
    _update(catalog_url, job_id, decision="approved" if approve else "declined",
            decision_hash=row["hash"], decided_by=actor)
    record(catalog_url, actor=actor,
           action="federation.release_approved" if approve else "federation.release_declined",
           subject=f"job:{job_id}", detail={"hash": row["hash"], "study": row["study"]})
    return row


def posted(catalog_url: str, job: dict[str, Any], outcome: str) -> None:
    """The hub has the job's result: never post it again. The release itself is dropped from
    the row (the audit log keeps what left)."""
    _update(catalog_url, job, state="posted", outcome=outcome, posted_at=utcnow(),
            release=None, suppressed=None)


def jobs(catalog_url: str, limit: int = 200) -> list[FederationJob]:
    """The site's jobs, newest first."""
    with session_scope(catalog_url) as session:
        rows = session.exec(select(FederationJob).order_by(FederationJob.received_at.desc())
                            .limit(limit)).all()
        for row in rows:
            session.expunge(row)
        return list(rows)
