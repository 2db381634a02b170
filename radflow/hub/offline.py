"""The hub's side of a site that is never online (phase 13): a study's job for that site goes
out as a signed file, carried by hand, and the site's signed release comes back the same way
(:mod:`radflow.federation.envelope`: one format both ways).

    data, job = export_job(home, STUDY, "uk-remote")     # radflow hub job export
    said = import_release(home, data)                    # radflow hub release import

The job file holds the job (its id, study, version hash, parameters, round), the study's name
and deadline, the signed version manifest and its bundle: everything the site needs, and
nothing about any other site. The release file is taken exactly as a site's post of its result
over the network would be (the same checks, :func:`radflow.hub.study_jobs.post_result`), so the
study joins it the same way. Every export and import, and every refused file with its reason,
goes to ``hub/audit.jsonl``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from radflow.errors import ConfigurationError
from radflow.federation.envelope import JOB, RELEASE, Refused, open_envelope, peek, seal
from radflow.hub.models import HubJob, HubStudy, HubVersion


def _audit(home: Any, actor: str, action: str, detail: dict[str, Any]) -> None:
    from radflow.hub.web import audit

    audit(home, actor, action, detail)


def export_job(home: Any, study_id: str, site: str, actor: str = "cli") -> tuple[bytes, dict]:
    """The signed job file of ``site``'s open job in the study (its newest round).

    Raises:
        ConfigurationError: no such study, or no open job of that site in it (yet).
    """
    engine = home.engine()
    with Session(engine) as session:
        study = session.get(HubStudy, study_id)
        if study is None:
            raise ConfigurationError(f"no study {study_id!r}", fix="radflow study list")
        job = session.exec(select(HubJob).where(
            HubJob.study_id == study_id, HubJob.site == site,
            col(HubJob.status).in_(("queued", "taken"))).order_by(
            col(HubJob.round).desc())).first()
        if job is None:
            raise ConfigurationError(f"study {study_id} has no open job for site {site!r}",
                                     fix="a study queues its jobs when its run starts (try again"
                                         " in a moment); `radflow study show STUDY` lists them")
        version = session.get(HubVersion, job.version_hash)
        payload = {
            "job": {"id": job.id, "study": study_id, "version": job.version_hash,
                    "params": json.loads(job.params), "round": job.round},
            "study": {"name": study.name, "deadline": study.deadline.replace(
                tzinfo=study.deadline.tzinfo or UTC).isoformat(timespec="seconds")},
            "version": {"hash": version.hash, "signed": json.loads(version.signed),
                        "bundle": base64.b64encode(version.bundle).decode()},
            "issued_at": datetime.now(UTC).isoformat(timespec="seconds")}
        job.status = "taken"
        session.add(job)
        session.commit()
    data = seal(home.key, JOB, "hub", site, payload)
    _audit(home, actor, "job.exported", {"job": payload["job"]["id"], "study": study_id,
                                         "site": site, "file": _hash(data)})
    return data, payload["job"]


def _hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def import_release(home: Any, data: bytes, actor: str = "cli") -> dict[str, Any]:
    """Verify a site's release file and join it to its study.

    Raises:
        Refused: the file does not read or verify (``unreadable``, ``bad_signature``...), its
            site is not enrolled (``unknown_site``), it was imported before (``replayed``), or
            the hub refuses its result as it would the same post (``unknown_job``,
            ``conflict``, ``invalid_release``). Each refusal is audited first.
    """
    from radflow.hub.api import JobResult
    from radflow.hub.registry import Refusal, public_keys
    from radflow.hub.study_jobs import post_result

    engine = home.engine()
    sender = "?"
    try:
        sender = str(peek(data).get("from", "?"))
        keys = public_keys(engine, [sender])
        if sender not in keys or sender == "hub":
            raise Refused("unknown_site", f"the file comes from {sender!r}, which is not an "
                          "enrolled site of this hub", fix="`radflow hub fleet` lists the sites")
        payload = open_envelope(data, RELEASE, "hub", keys[sender].encode())
        try:
            result = JobResult.model_validate(payload.get("result"))
            job_id = str(payload["job"])
        except (ValueError, KeyError) as exc:
            raise Refused("unreadable", f"the release file's result is not valid: "
                          f"{str(exc).splitlines()[0]}", fix="ask the site for a new file") \
                from None
        if (result.release is None) == (result.refusal is None):
            raise Refused("unreadable", "the release file holds neither a release nor a "
                          "refusal", fix="ask the site for a new file")
        try:
            status = post_result(engine, sender, job_id, result.release, result.refusal,
                                 result.policy)
        except Refusal as exc:
            raise Refused(exc.code, f"the hub refuses this result: {exc.message}",
                          fix="see radflow study show STUDY") from None
        if status == "already":
            raise Refused("replayed", f"the release of job {job_id} was imported before",
                          fix="nothing to do: the study has it")
    except Refused as exc:
        _audit(home, actor, "release.refused", {"site": sender, "code": exc.code,
                                                "reason": exc.message, "file": _hash(data)})
        raise
    _audit(home, actor, "release.imported", {"site": sender, "job": job_id,
                                             "study": payload.get("study"),
                                             "outcome": result.refusal or "released",
                                             "file": _hash(data)})
    return {"site": sender, "job": job_id, "study": payload.get("study"),
            "outcome": result.refusal or "released", "status": "recorded"}
