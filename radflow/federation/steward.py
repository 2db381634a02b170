"""What a data steward decides at a site, shared by the CLI (`radflow site jobs|releases`), the
web app's Federation page and the agent:

- **job acceptance** (job mode ``manual``, the default): a queued job runs only once accepted;
- **manual release** (policy ``manual_release: true``): after the egress gate, the release waits
  under ``federation/releases/<job>.json`` until a steward approves exactly that JSON (the
  approval names its sha256; a release that changed since is not covered) or declines it (the
  hub gets the code ``declined``, nothing else).

Each decision is a file next to the job (the agent reads it on its next poll) and an event in the
site's audit log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError
from radflow.hashing import digest

JOB_ID = re.compile(r"[0-9a-f]{32}")


def _check_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise ConfigurationError(f"{job_id!r} is not a job id",
                                 fix="see radflow site jobs list / radflow site releases list")
    return job_id


def accepted_file(site_root: Path, job_id: str) -> Path:
    return site_root / "federation" / "jobs" / f"{job_id}.accepted"


def releases_dir(site_root: Path) -> Path:
    return site_root / "federation" / "releases"


def accept_job(catalog_url: str, site_root: Path, job_id: str, actor: str) -> None:
    """Accept a queued job (recorded in the audit log); the agent runs it on its next poll."""
    from radflow.audit import record

    path = accepted_file(site_root, _check_id(job_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"accepted by {actor}\n")
    record(catalog_url, actor=actor, action="federation.job_accepted", subject=f"job:{job_id}",
           detail={})


def release_decision(catalog_url: str, site_root: Path, job: dict[str, Any],
                     release: dict[str, Any], suppressed: list[str]) -> str:
    """For the agent: ``approved``, ``declined`` or ``pending`` for this exact release. A new
    (or changed) release is written for the steward and its arrival audited once."""
    from radflow.audit import record

    folder = releases_dir(site_root)
    pending = folder / f"{_check_id(job['id'])}.json"
    wanted = digest(release)
    if (folder / f"{job['id']}.declined").exists():
        return "declined"
    approved = folder / f"{job['id']}.approved"
    if approved.exists() and approved.read_text().split()[0] == wanted:
        return "approved"
    current = json.loads(pending.read_text()) if pending.exists() else None
    if current is None or current["hash"] != wanted:
        folder.mkdir(parents=True, exist_ok=True)
        pending.write_text(json.dumps({"job": job["id"], "study": job["study"],
                                       "version": job["version"], "hash": wanted,
                                       "release": release, "suppressed": suppressed}, indent=2))
        record(catalog_url, actor="radflow:agent", action="federation.release_pending",
               subject=f"job:{job['id']}", detail={"hash": wanted, "study": job["study"]})
    return "pending"


def undecided(site_root: Path, job_id: str) -> bool:
    """A release of this job waits and no steward has decided on it yet."""
    folder = releases_dir(site_root)
    return (folder / f"{job_id}.json").exists() and not any(
        (folder / f"{job_id}{s}").exists() for s in (".approved", ".declined"))


def pending_releases(site_root: Path) -> list[dict[str, Any]]:
    """Releases waiting for a steward (newest first), each exactly as it would leave."""
    folder = releases_dir(site_root)
    rows = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        if not (folder / f"{path.stem}.declined").exists():
            row = json.loads(path.read_text())
            approved = folder / f"{path.stem}.approved"
            row["approved"] = approved.exists() and approved.read_text().split()[0] == row["hash"]
            rows.append(row)
    return rows


def pending_release(site_root: Path, job_id: str) -> dict[str, Any]:
    path = releases_dir(site_root) / f"{_check_id(job_id)}.json"
    if not path.exists():
        raise ConfigurationError(f"no release of job {job_id} waits for a decision",
                                 fix="see radflow site releases list")
    return json.loads(path.read_text())


def decide_release(catalog_url: str, site_root: Path, job_id: str, actor: str, *,
                   approve: bool, expected_hash: str | None = None) -> dict[str, Any]:
    """Approve (exactly the release with ``expected_hash``, when given) or decline a waiting
    release; audited. Returns the release decided on.

    Raises:
        ConfigurationError: no such release, or it changed since the steward saw it.
    """
    from radflow.audit import record

    row = pending_release(site_root, job_id)
    if expected_hash is not None and expected_hash != row["hash"]:
        raise ConfigurationError(f"the release of job {job_id} changed since you saw it",
                                 fix="look at it again (radflow site releases show) and decide")
    folder = releases_dir(site_root)
    (folder / f"{job_id}.{'approved' if approve else 'declined'}").write_text(
        f"{row['hash']} {actor}\n")
    record(catalog_url, actor=actor,
           action="federation.release_approved" if approve else "federation.release_declined",
           subject=f"job:{job_id}", detail={"hash": row["hash"], "study": row["study"]})
    return row


def forget(site_root: Path, job_id: str) -> None:
    """Remove a job's decision files once its result is posted (the audit log keeps them)."""
    folder = releases_dir(site_root)
    for suffix in (".json", ".approved", ".declined"):
        (folder / f"{job_id}{suffix}").unlink(missing_ok=True)
