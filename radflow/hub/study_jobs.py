"""The hub's studies and their jobs: which sites a study goes to, its rounds, the jobs each
site polls for, and the releases they post back.

    sites = check_study(engine, "mean-volume", None)   # every enrolled site, or why not
    check_params(engine, "mean-volume", {"cohort": {...}})
    study = start_study(engine, "mean-volume", params, sites, by="coordinator@hub")
    jobs = queued_jobs(engine, "uk-essen")              # what a site's agent picks up
    post_result(engine, "uk-essen", job_id, release, None)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from radflow.errors import ConfigurationError
from radflow.hub import inbox
from radflow.hub.models import HubJob, HubSite, HubStudy, HubVersion
from radflow.hub.registry import Refusal, detached


def study(engine: Engine, study_id: str) -> HubStudy | None:
    with Session(engine) as session:
        row = session.get(HubStudy, study_id)
        if row is not None:
            session.expunge(row)
        return row


def studies(engine: Engine) -> list[HubStudy]:
    return detached(engine, select(HubStudy).order_by(HubStudy.created_at.desc()))


def check_study(engine: Engine, name: str, sites_: list[str] | None) -> list[str]:
    """The sites a study of ``name`` would go to.

    Raises:
        ConfigurationError: no published version of that flow, no site, or an unknown site.
    """
    with Session(engine) as session:
        if session.exec(select(HubVersion).where(HubVersion.name == name)).first() is None:
            raise ConfigurationError(f"no version of {name!r} is published on this hub",
                                     fix="radflow publish PATH-OF-THE-FLOW-PACKAGE (e.g. "
                                         f"federation/flows/{name})")
        enrolled = [s.name for s in session.exec(select(HubSite).where(
            HubSite.status == "enrolled"))]
    chosen = sites_ or enrolled
    if not chosen:
        raise ConfigurationError("no site has joined this hub yet",
                                 fix="radflow hub site add NAME, then at the site: "
                                     "radflow site join HUB_URL --code CODE")
    unknown = sorted(set(chosen) - set(enrolled))
    if unknown:
        raise ConfigurationError(f"sites {unknown} are not enrolled",
                                 fix="see radflow hub site list")
    return chosen


def check_params(engine: Engine, name: str, params: dict[str, Any]) -> None:
    """Check a study's parameters against the newest version's parameter schema.

    Raises:
        ConfigurationError: a parameter is missing or invalid (the message says which).
    """

    import jsonschema

    with Session(engine) as session:
        row = session.exec(select(HubVersion).where(HubVersion.name == name)
                           .order_by(HubVersion.published_at.desc())).first()
    if row is None:
        return
    schema = json.loads(row.signed)["manifest"].get("parameter_schema") or {}
    try:
        jsonschema.validate(params, schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "the parameters"
        raise ConfigurationError(f"{name}: {where}: {exc.message}",
                                 fix="pass the parameters its schema asks for (`radflow study "
                                     "flows` shows them); e.g. --param features=a,b") from None


def start_study(engine: Engine, name: str, params: dict[str, Any], sites_: list[str] | None,
                deadline_s: float, study_id: str | None = None,
                started_by: str | None = None,
                round_params: dict[str, Any] | None = None) -> tuple[HubStudy, list[HubJob]]:
    """Queue one job per enrolled site (or per named site) for the newest version of ``name``
    (round 0; a job's parameters are the study's with ``round_params`` over them).

    Raises:
        ConfigurationError: no published version of that flow, or an unknown site named.
    """
    import uuid

    chosen = check_study(engine, name, sites_)
    check_params(engine, name, params)
    with Session(engine) as session:
        version = session.exec(select(HubVersion).where(HubVersion.name == name)
                               .order_by(HubVersion.published_at.desc())).first()
        study = HubStudy(id=study_id or new_study_id(), name=name, version_hash=version.hash,
                         params=json.dumps(params),
                         deadline=datetime.now(UTC) + timedelta(seconds=deadline_s),
                         started_by=started_by)
        job_params = json.dumps(params | (round_params or {}))
        jobs = [HubJob(id=uuid.uuid4().hex, study_id=study.id, site=site,
                       version_hash=version.hash, params=job_params) for site in chosen]
        session.add(study)
        session.add_all(jobs)
        session.commit()
        for row in (study, *jobs):
            session.refresh(row)
            session.expunge(row)
    return study, jobs


def queue_single_round(engine: Engine, name: str, params: dict[str, Any],
                       sites_: list[str] | None, deadline_s: float, study_id: str,
                       started_by: str) -> bool:
    """Queue a single-round study's jobs before its coordinator run exists, so that the sites
    work while the hub's worker starts that run (a process: seconds); the run then goes on
    from the hub's records as a resumed one does. A flow with a coordinator part of its own is
    left to it (False): its first round is the bundle's code, run on the hub's worker only."""
    with Session(engine) as session:
        version = session.exec(select(HubVersion).where(HubVersion.name == name)
                               .order_by(HubVersion.published_at.desc())).first()
    if version is None or json.loads(version.signed)["manifest"].get("coordinator_entrypoint"):
        return False  # (read from its manifest: none of its code runs here)
    start_study(engine, name, params, sites_, deadline_s, study_id, started_by)
    return True


def queue_round(engine: Engine, study: HubStudy, round_no: int, sites_: list[str],
                params: dict[str, Any]) -> list[HubJob]:
    """Queue round ``round_no`` of a study: one job per site, with ``params``."""
    import uuid

    with Session(engine) as session:
        jobs = [HubJob(id=uuid.uuid4().hex, study_id=study.id, site=site,
                       version_hash=study.version_hash, params=json.dumps(params),
                       round=round_no) for site in sites_]
        session.add_all(jobs)
        session.commit()
        for row in jobs:
            session.refresh(row)
            session.expunge(row)
    return jobs


def close_round(engine: Engine, study_id: str, round_no: int) -> None:
    """The round's deadline passed: its unanswered jobs are ``missed`` (no longer handed out,
    and a late post is refused)."""
    with Session(engine) as session:
        for job in session.exec(select(HubJob).where(
                HubJob.study_id == study_id, HubJob.round == round_no,
                HubJob.status.in_(("queued", "taken")))):
            job.status = "missed"
            session.add(job)
        session.commit()


def forget_study(engine: Engine, study_id: str) -> None:
    """Remove a study and its jobs: its coordinator run could not be created, so it never
    started (a site that took a job already has its release refused as an unknown job)."""
    with Session(engine) as session:
        for job in session.exec(select(HubJob).where(HubJob.study_id == study_id)):
            session.delete(job)
        row = session.get(HubStudy, study_id)
        if row is not None:
            session.delete(row)
        session.commit()


def new_study_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def queued_jobs(engine: Engine, site: str) -> list[dict[str, Any]]:
    """The site's jobs that have no release or refusal yet (a restarted agent gets its job in
    flight again)."""

    with Session(engine) as session:
        rows = session.exec(select(HubJob).where(HubJob.site == site,
                                                 HubJob.status.in_(("queued", "taken"))))
        return [{"id": j.id, "study": j.study_id, "version": j.version_hash,
                 "params": json.loads(j.params)} for j in rows]


def post_result(engine: Engine, site: str, job_id: str, release: dict[str, Any] | None,
                refusal: str | None, policy: dict[str, Any] | None = None) -> str:
    """Record a site's release or refusal, once: the job id is the idempotency key. Returns
    ``recorded`` or ``already`` (the same post again). A release that does not match its
    version's release schema makes the job ``invalid_release`` (:mod:`radflow.hub.inbox`).

    Raises:
        Refusal: ``unknown_job`` (not this site's), ``conflict`` (a different second post),
            ``invalid_release`` (this release, or the same one again: the reason says why).
    """
    with Session(engine) as session:
        job = session.get(HubJob, job_id)
        if job is None or job.site != site:
            raise Refusal("unknown_job", "no such job for this site")
        if job.status == "missed":
            raise Refusal("conflict", "the study's deadline passed before this result came")
        if job.status == "invalid_release":
            if release is not None and job.body_hash == inbox.body_hash(release):
                raise Refusal("invalid_release", job.reason or "invalid")
            raise Refusal("conflict", "this job's release was refused as invalid already")
        if job.status in ("released", "refused"):
            if (job.release, job.refusal) == (_text(release), refusal):
                return "already"
            raise Refusal("conflict", "this job has a different result already")
        if release is not None:
            reason = inbox.problem(session, job, release)
            if reason is not None:
                inbox.record_invalid(job, reason, inbox.body_hash(release), policy)
                session.add(job)
                session.commit()
                raise Refusal("invalid_release", reason)
        job.status = "released" if release is not None else "refused"
        job.release, job.refusal, job.posted_at = _text(release), refusal, datetime.now(UTC)
        job.policy = json.dumps(policy, sort_keys=True) if policy else None
        session.add(job)
        session.commit()
    return "recorded"


def _text(release: dict[str, Any] | None) -> str | None:
    """A release as the hub keeps it (JSON, sorted keys); "" for one too deep to write."""
    if release is None:
        return None
    try:
        return json.dumps(release, sort_keys=True)
    except (RecursionError, ValueError):
        return ""


def study_jobs(engine: Engine, study_id: str, round_no: int | None = None) -> list[HubJob]:
    """A study's jobs (of one round, if given), by round and site."""
    query = select(HubJob).where(HubJob.study_id == study_id)
    if round_no is not None:
        query = query.where(HubJob.round == round_no)
    return detached(engine, query.order_by(HubJob.round, HubJob.site))
