"""A site that is never online (phase 13): it takes a job from a signed file carried by hand,
and writes its release to a file signed with its own key.

    radflow site job import JOB_FILE --out RELEASE_FILE

runs what the site's agent runs for a job that came over the network, with the same code
(:class:`radflow.federation.agent.Agent`): the hub's signature on the file (the key pinned when
the site joined) and on the version, every file of the bundle, the site's approval, its job
mode and access requests, the site part on the site's own Prefect, the egress gate, the
steward's release. Its outcome is decided with its audit event and outbox entry in one
transaction, as online; *delivering* it is writing the release file (the entry is then done,
as after the hub's acknowledgement). An import stopped midway (a steward to decide, a kill)
goes on from where it was when the same file is imported again; a job decided already is
refused as ``replayed``, and every refused file is an audit event
(``federation.import_refused``: the code and the reason) before the command fails.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radflow.federation.envelope import JOB, RELEASE, Refused, open_envelope, seal

ACTOR = "radflow:import"


class Waiting(Exception):
    """The job waits for a steward (its acceptance, or the release's approval)."""


def _refuse(ctx: Any, exc: Refused, data: bytes) -> Refused:
    from radflow import audit

    audit.record(ctx.catalog_url, actor=ACTOR, action="federation.import_refused",
                 subject=f"site:{ctx.name}", detail={
                     "code": exc.code, "reason": exc.message,
                     "file": "sha256:" + hashlib.sha256(data).hexdigest()})
    return exc


def read_job(ctx: Any, data: bytes) -> dict[str, Any]:
    """The job file's payload, verified against the pinned hub key (refusals audited).

    Raises:
        Refused: it does not verify, or its deadline has passed (``deadline_passed``).
    """
    from radflow.errors import ConfigurationError
    from radflow.federation.client import federation_dir

    try:
        pinned = (federation_dir(ctx.paths.root) / "hub.pub").read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"site {ctx.name} has not joined a hub: no hub key is pinned",
                                 fix="radflow site join-offline --hub-key hub.pub --out site.pub"
                                     " (or radflow site join HUB_URL --code CODE)") from None
    try:
        payload = open_envelope(data, JOB, ctx.name, pinned)
        deadline = datetime.fromisoformat(payload["study"]["deadline"])
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        if deadline < datetime.now(UTC):
            raise Refused("deadline_passed", f"the study's deadline passed at {deadline}",
                          fix="ask the hub's operator for a study with a later deadline")
        return payload
    except Refused as exc:
        raise _refuse(ctx, exc, data) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(ctx, Refused("unreadable", f"the job file lacks a part ({exc})",
                                   fix="ask the hub's operator for a new file"), data) from None


def import_job(ctx: Any, data: bytes, out: Path, timeout: float = 3600.0,
               say: Any = print) -> dict[str, Any]:
    """Run the job of a job file at this site and write the signed release file to ``out``.

    Raises:
        Refused: a file that is not taken (see :func:`read_job`, and ``replayed``).
        Waiting: a steward decides first (then import the same file again).
        TimeoutError: the site part did not end within ``timeout`` seconds.
    """
    from radflow import audit, outbox
    from radflow.federation import steward
    from radflow.federation.agent import Agent
    from radflow.federation.versions import verify_files

    payload = read_job(ctx, data)
    job = payload["job"]
    row = steward.job_row(ctx.catalog_url, job["id"])
    if row is not None and row.state in ("posted", "undeliverable"):
        raise _refuse(ctx, Refused("replayed", f"job {job['id']} was taken and its release "
                                   "written before", fix="nothing to do; the release file "
                                   "written then is the one to carry back"), data)
    version = payload["version"]
    if version.get("hash") != job["version"]:
        raise _refuse(ctx, Refused("bad_signature", "the file's version is not its job's",
                                   fix="ask the hub's operator for a new file"), data)
    if row is None:
        audit.record(ctx.catalog_url, actor=ACTOR, action="federation.imported",
                     subject=f"job:{job['id']}", detail={
                         "study": job["study"], "version": job["version"],
                         "file": "sha256:" + hashlib.sha256(data).hexdigest()})
    agent = Agent(ctx)
    agent.fetch = lambda _root, _hash: verify_files(  # the same checks as a fetched version
        ctx.paths.root, job["version"], version["signed"], base64.b64decode(version["bundle"]))
    agent.send = lambda entry: _write_release(ctx, entry, job, out)
    agent.jobs = {job["id"]: job}
    deadline = time.monotonic() + timeout
    said: set[str] = set()
    while True:
        outcome = agent.handle(job)
        row = steward.job_row(ctx.catalog_url, job["id"])
        if row is not None and row.state == "posted":
            return {"job": job["id"], "study": job["study"], "outcome": row.outcome or outcome,
                    "release_file": str(out)}
        if row is not None and row.state == "sending":  # decided before a stop: write it now
            for entry in outbox.entries(ctx.catalog_url, kind="hub.post", state="pending",
                                        subject=f"job:{job['id']}"):
                outbox.deliver_one(ctx.catalog_url, entry, agent.send, steward.on_posted)
            continue
        if job["id"] in agent.waiting:
            raise Waiting(f"job {job['id']} waits for a data steward: accept it (radflow site "
                          f"jobs accept {job['id']}) or decide its release (radflow site "
                          "releases list), then import the same file again")
        if job["id"] in agent.running and "running" not in said:
            said.add("running")
            say(f"job {job['id']}: the site part runs on this site's Prefect")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job['id']}: the site part did not end in {timeout:g} s")
        time.sleep(1.0)


def _write_release(ctx: Any, entry: Any, job: dict[str, Any], out: Path) -> str:
    """Deliver an outcome by writing the release file (signed with the site's key)."""
    from radflow import outbox
    from radflow.federation.client import federation_dir

    data = seal(federation_dir(ctx.paths.root) / "site.key", RELEASE, ctx.name, "hub", {
        "job": entry.target, "study": job["study"], "result": outbox.payload(entry),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds")})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return "recorded"


def join_offline(site_root: Path, site: str, hub_key_pem: bytes) -> dict[str, Any]:
    """Join a hub without a network: make the site's key pair (if it has none), pin the hub's
    public key (from the file its operator gave), and mark the site offline (it runs no
    agent). Returns both fingerprints and the site's public key (PEM) for the hub's operator.

    Raises:
        ConfigurationError: the site has joined a hub already, or the file holds no Ed25519
            public key.
    """
    import json

    from radflow.errors import ConfigurationError
    from radflow.federation.client import federation_dir
    from radflow.federation.signing import fingerprint, generate

    folder = federation_dir(site_root)
    if (folder / "hub.json").exists():
        raise ConfigurationError(f"site {site!r} has joined a hub already "
                                 f"({folder / 'hub.json'})",
                                 fix="remove that folder on purpose to join another hub")
    try:
        hub_print = fingerprint(hub_key_pem)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("the hub key file holds no Ed25519 public key (PEM)",
                                 fix="ask the hub's operator for `radflow hub key --out "
                                     "hub.pub`") from exc
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "site.key"
    if not key_path.exists():
        generate(key_path)
    public = key_path.with_suffix(".key.pub").read_bytes()
    (folder / "hub.pub").write_bytes(hub_key_pem)
    info = {"url": None, "offline": True, "site": site, "token_url": None,
            "hub_fingerprint": hub_print, "site_fingerprint": fingerprint(public)}
    (folder / "hub.json").write_text(json.dumps(info, indent=2))
    return info | {"public_key_pem": public.decode()}


def is_offline(site_root: Path) -> bool:
    """Whether the site joined its hub by file (it runs no agent)."""
    import json

    try:
        return bool(json.loads((site_root / "federation" / "hub.json").read_text())
                    .get("offline"))
    except (OSError, ValueError):
        return False
