"""The site agent: a site component, running once the site has joined a hub. It only connects
out, long-polling the hub for jobs, and for each job, in order:

1. checks the site's approval of the version's hash (``not_approved``), the job mode (manual:
   a data steward accepts it first), the signature against the pinned hub key and every file
   (``bad_signature``), and the plugins at their exact versions (``missing_plugin:...``);
2. installs the bundle under ``sites/NAME/bundles/<hash>/``;
3. runs the site part as a ``federated-job`` flow run on the site's own Prefect, with the job
   id as idempotency key (a restarted agent finds the same run, never a second one);
4. puts the release through the egress gate (and, with ``manual_release``, waits until a data
   steward approves exactly that JSON, or declines it: ``declined``);
5. posts the release or the refusal code once (the hub treats the job id as idempotency key).

How far each job got is its row in the catalog's ``federation_job`` table
(:mod:`radflow.federation.steward`): a killed agent, restarted, waits on the run it started and
never posts a job marked posted.

Every step that decides is in the site's audit log.

    python -m radflow.federation.agent --site NAME      (started by `radflow site up`)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from radflow.service import ServiceLoop

POLL_SECONDS = 20.0  # how long one long poll is held open at the hub


class Agent(ServiceLoop):
    def __init__(self, ctx: Any, heartbeat: Path | None = None) -> None:
        super().__init__("agent", heartbeat, interval=0.2, dependencies=("hub", "prefect"))
        from radflow.federation.client import HubClient

        self.ctx = ctx
        self.root = ctx.paths.root
        self.hub = HubClient(self.root)
        self.waiting: list[str] = []  # jobs waiting on a steward (acceptance or release)

    def tick(self) -> None:
        if self.guard("hub", self.poll) is None:
            time.sleep(5.0)  # the hub is away or refuses: try again, gently

    def poll(self) -> bool:
        from radflow.errors import SiteError

        # jobs waiting for a steward's acceptance do not end the long poll (the acceptance is
        # a local file: the agent looks again when the poll ends, within 5 s)
        answer = self.hub.get("/jobs", wait=5.0 if self.waiting else POLL_SECONDS,
                              skip=",".join(self.waiting))
        if answer.status_code != 200:
            raise SiteError(f"the hub answered HTTP {answer.status_code} to the job poll",
                            fix="the site may be revoked: ask the hub's operator")
        self.waiting = []
        for job in answer.json()["jobs"]:
            self.guard("prefect", lambda job=job: self.handle(job))
        return True

    def detail(self) -> dict[str, Any]:
        return {"detail": f"joined {self.hub.info['url']}"
                          + (f"; {len(self.waiting)} job(s) await acceptance" if self.waiting
                             else "")}

    def handle(self, job: dict[str, Any]) -> str | None:
        """Take one job as far as it can go now; returns what was posted (or None). Its row in
        ``federation_job`` says how far it got before (a restarted agent goes on from there)."""
        from radflow.federation import steward
        from radflow.federation.egress import gate
        from radflow.federation.manifest import missing_plugins
        from radflow.federation.policy import load_policy
        from radflow.federation.signing import SignatureInvalid
        from radflow.federation.versions import UnsupportedVersion, fetch

        url = self.ctx.catalog_url
        row = steward.received(url, job)
        if row.state == "posted":  # the hub has it (it lists the job until it does)
            self.logger.warning("job %s: posted already (%s); not posting again", job["id"],
                                row.outcome)
            return None
        policy = load_policy(self.root)
        if job["version"] not in policy.approved:
            return self.post(job, refusal="not_approved")
        if (policy.job_mode == "manual" and row.accepted_by is None) \
                or (policy.manual_release and steward.undecided(url, job["id"])):
            self.waiting.append(job["id"])  # a steward decides first
            return None
        try:
            signed, files = fetch(self.root, job["version"])
        except SignatureInvalid as exc:
            self.logger.warning("job %s: version %s refused: %s", job["id"], job["version"],
                                exc.message)
            return self.post(job, refusal="bad_signature")
        except UnsupportedVersion as exc:
            self.logger.warning("job %s: %s", job["id"], exc.message)
            return self.post(job, refusal="unsupported_version")
        missing = missing_plugins(signed.manifest)
        if missing:
            return self.post(job, refusal=missing[0])
        self.install(job["version"], files)
        release = self.run(job, signed.manifest.site_entrypoint, row.flow_run_id)
        if release is None:
            return self.post(job, refusal="site_part_failed")
        result = gate(release, signed.manifest.release_schema, policy, job["params"])
        if not result.ok:
            self.logger.warning("job %s: the egress gate refused: %s (%s)", job["id"],
                                result.refusal, result.detail or "")
            return self.post(job, refusal=result.refusal, detail=result.detail)
        if policy.manual_release:  # a steward approves exactly this JSON first
            decision = steward.release_decision(url, job, result.released, result.suppressed)
            if decision == "declined":
                return self.post(job, refusal="declined")
            if decision == "pending":
                self.waiting.append(job["id"])
                return None
        return self.post(job, release=result.released, suppressed=result.suppressed)

    def install(self, version_hash: str, files: dict[str, bytes]) -> Path:
        from radflow.flows.federated_job import bundle_dir

        folder = bundle_dir(self.root, version_hash)
        for rel, data in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
        return folder

    def run(self, job: dict[str, Any], entrypoint: str,
            flow_run_id: str | None = None) -> dict[str, Any] | None:
        """Run the site part (or wait on the run a killed agent started) and read its release.
        The job id is also the run's idempotency key: never two runs of one job."""
        from radflow.federation.steward import started

        api = self.ctx.prefect()
        if flow_run_id is None:
            flow_run_id = api.create_flow_run(f"federated-job/{self.ctx.name}", {
                "job_id": job["id"], "version_hash": job["version"], "entrypoint": entrypoint,
                "params": job["params"], "site": self.ctx.name},
                idempotency_key=f"federated-job-{job['id']}",
                tags=(f"version:{job['version'][7:19]}", f"study:{job['study']}")).id
            started(self.ctx.catalog_url, job, flow_run_id)
        done = api.wait(flow_run_id, timeout=24 * 3600, poll=0.25)
        if not done.ok:
            self.logger.warning("job %s: the site part ended %s", job["id"], done.state)
            return None
        out = json.loads((self.root / "federation" / "jobs" / f"{job['id']}.json").read_text())
        return out.get("release")

    def post(self, job: dict[str, Any], release: dict | None = None, refusal: str | None = None,
             suppressed: list[str] | None = None, detail: str | None = None) -> str:
        """Post the result once; the audit event (local) also says why a gate refused."""
        from radflow.audit import record
        from radflow.errors import SiteError
        from radflow.federation.policy import load_policy

        answer = self.hub.post(f"/jobs/{job['id']}/result",
                               {"release": release, "refusal": refusal,
                                "policy": load_policy(self.root).summary()})
        if answer.status_code in (413, 422):  # the hub will never take this post: no retry
            return self.refused_by_hub(job, answer)
        if answer.status_code != 200:
            raise SiteError(f"the hub refused the result of job {job['id']} "
                            f"(HTTP {answer.status_code})", fix="see the hub's log")
        from radflow.federation.steward import posted

        posted(self.ctx.catalog_url, job, refusal or "released")
        action = "federation.released" if release is not None else "federation.refused"
        record(self.ctx.catalog_url, actor="radflow:agent", action=action,
               subject=f"job:{job['id']}",
               detail={"version": job["version"], "study": job["study"], "refusal": refusal,
                       "release": release, "suppressed": suppressed or [],
                       **({"detail": detail} if detail else {}),
                       "hub": answer.json()["status"]})
        self.logger.info("job %s: %s", job["id"], refusal or "released")
        return refusal or "released"


    def refused_by_hub(self, job: dict[str, Any], answer: Any) -> str:
        """The hub refused the post itself (413: too large; 422: its check of the release
        schema, e.g. ``invalid_release``): the same post would get the same answer, so the job
        is done here, with the hub's reason in the audit log."""
        from radflow.audit import record
        from radflow.federation.steward import posted

        try:
            said = answer.json()
        except ValueError:
            said = {}
        reason = str(said.get("reason") or said.get("error") or f"HTTP {answer.status_code}")
        posted(self.ctx.catalog_url, job, "invalid_release")
        record(self.ctx.catalog_url, actor="radflow:agent", action="federation.invalid_release",
               subject=f"job:{job['id']}", detail={"version": job["version"],
                                                   "study": job["study"],
                                                   "http": answer.status_code,
                                                   "hub": reason[:200]})
        self.logger.warning("job %s: the hub refused the post (HTTP %s: %s)", job["id"],
                            answer.status_code, reason[:200])
        return "invalid_release"


def main(argv: list[str] | None = None) -> int:
    from radflow.service import run_site_service

    return run_site_service("python -m radflow.federation.agent", lambda ctx: Agent(
        ctx, heartbeat=ctx.paths.run / "agent.json"), argv)

if __name__ == "__main__":
    sys.exit(main())
