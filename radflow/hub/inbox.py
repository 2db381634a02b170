"""The hub's release inbox trusts nothing a site posts. Each release is checked against the
release schema of its job's version, read from the signed manifest the hub published, for the
job's round and parameters exactly as the site's gate resolved them, with the same code
(:func:`radflow.federation.structure.check_release`, less the site's policy, which the hub
cannot know). A release that fails, or a body over the size bound, makes the job
``invalid_release``: the study goes on with the other sites, the hub's operator sees the rule
and the schema field (never a value), and the site is answered 422 (413 for the size).

    reason = problem(engine, job, release)          # None: well-formed
    mark_invalid(engine, "uk-essen", job_id, reason, body_hash)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from radflow.federation.release import ReleaseSchema
from radflow.federation.structure import Refused, check_release
from radflow.hashing import digest
from radflow.hub.models import HubJob, HubVersion

OPEN = ("queued", "taken")


def body_hash(release: Any) -> str:
    """The hash a refused release is remembered by (the same post again: the same answer)."""
    try:
        return digest(release)
    except (RecursionError, ValueError):  # nested too deep to hash: remembered as such
        return "unhashable"


def problem(session: Session, job: HubJob, release: Any) -> str | None:
    """Why ``release`` is not a release of ``job``'s version (the rule and the schema field),
    or None."""
    version = session.get(HubVersion, job.version_hash)
    if version is None:
        return "schema (the job's version is not published here)"
    schema = ReleaseSchema.model_validate(json.loads(version.signed)["manifest"]
                                          ["release_schema"])
    try:
        check_release(release, schema, json.loads(job.params), released=True)
    except Refused as exc:
        return exc.reason()
    except RecursionError:
        return "shape (nested too deep)"
    return None


def mark_invalid(engine: Engine, site: str, job_id: str, reason: str,
                 hashed: str | None = None, policy: dict[str, Any] | None = None) -> bool:
    """Make an open job of ``site`` ``invalid_release``; False when it is not an open job of
    that site (nothing changes)."""
    with Session(engine) as session:
        job = session.get(HubJob, job_id)
        if job is None or job.site != site or job.status not in OPEN:
            return False
        record_invalid(job, reason, hashed, policy)
        session.add(job)
        session.commit()
    return True


def record_invalid(job: HubJob, reason: str, hashed: str | None,
                   policy: dict[str, Any] | None) -> None:
    job.status, job.reason, job.body_hash = "invalid_release", reason[:200], hashed
    job.release, job.refusal, job.posted_at = None, "invalid_release", datetime.now(UTC)
    job.policy = json.dumps(policy, sort_keys=True) if policy else None
