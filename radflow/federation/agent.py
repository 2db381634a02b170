"""The site agent: a site component, running once the site has joined a hub. It only connects
out, long-polling the hub for jobs, and for each job, in order:

1. checks the site's approval of the version's hash (``not_approved``), the job mode (manual:
   a data steward accepts it first), the signature against the pinned hub key and every file
   (``bad_signature``), the radflow and plugin versions the version requires
   (``unsupported_version:<distribution>``, its audit event saying what to upgrade) and the
   plugins older versions pin exactly (``missing_plugin:...``);
2. installs the bundle under ``sites/NAME/bundles/<hash>/``;
3. starts the site part as a ``federated-job`` flow run on the site's own Prefect, with the job
   id as idempotency key (a restarted agent finds the same run, never a second one);
4. once that run has ended, puts the release through the egress gate (and, with
   ``manual_release``, leaves it to a data steward, who approves exactly that JSON or declines
   it: ``declined``);
5. decides the outcome (the release, or a refusal code) together with its audit event and an
   outbox entry for the post, in one transaction (:func:`radflow.federation.steward.decide`);
6. posts it, and retries until the hub acknowledges (the hub takes a job's result once and
   answers ``already`` to the same post again).

The loop never waits on a job: each tick delivers what the outbox holds, asks the hub for jobs
and looks once at the run of each job in flight, so the heartbeat stays current while site
parts run, and several jobs can be in flight at once. While the hub is away (down, restarting,
the link cut) the agent asks it again every few seconds, says so once in its log and its
heartbeat, and goes on with the jobs it knows: their runs end and their outcomes are decided
and wait in the outbox, which is delivered as soon as the hub answers again (back-off or not).
How far each job got is its row in the catalog's ``federation_job`` table
(:mod:`radflow.federation.steward`): a killed agent, restarted, goes on from there: it finds the
run it started, and a decided outcome is only delivered, never decided again.

    python -m radflow.federation.agent --site NAME      (started by `radflow site up`)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from requests import RequestException

from radflow import outbox
from radflow.catalog.models import OutboxEntry
from radflow.errors import RadflowError, SiteError
from radflow.faults import crash_point
from radflow.federation import steward
from radflow.federation.client import BUSY, HubClient, HubUnavailable
from radflow.federation.policy import load_policy
from radflow.service import ServiceLoop

POLL_SECONDS = 20.0  # how long one long poll is held open at the hub when nothing is in flight
BUSY_POLL_SECONDS = 1.0  # ... and while jobs run or wait: their runs are looked at every tick
AWAY_SECONDS = 5.0  # between two tries while the hub is away (or refuses)
UNSETTLED_REPORT_SECONDS = 10.0  # between two site reports while the site is not all running
ACTOR = "radflow:agent"


class Agent(ServiceLoop):
    def __init__(self, ctx: Any, heartbeat: Path | None = None) -> None:
        super().__init__("agent", heartbeat, interval=0.2, dependencies=("hub", "prefect"))
        self.ctx = ctx
        self.root = ctx.paths.root
        self.hub = HubClient(self.root)
        self.waiting: list[str] = []  # jobs waiting on a steward (acceptance or release)
        self.running: list[str] = []  # jobs whose site part runs
        self.sending: list[str] = []  # jobs whose outcome waits in the outbox
        self.failing: list[str] = []  # jobs whose last step failed (Prefect away...)
        self.manifests: dict[str, Any] = {}  # job id -> its verified manifest (this process)
        self.jobs: dict[str, dict[str, Any]] = {}  # the hub's last list of this site's jobs
        self.prefect = ctx.prefect()
        self._warned: set[str] = set()
        self._retry_now = False  # the hub is back: what the outbox holds goes at once
        self._report_due = 0.0  # the site's report about itself (radflow.federation.fleet)
        from radflow.federation.discovery import Publisher
        from radflow.federation.versions import fetch

        self.fetch = fetch  # a version's manifest and files, verified (a job file's: offline)

        self.publisher = Publisher(ctx, self.hub, ACTOR, self.logger)
        self.on_up("hub", self._hub_back)

    def tick(self) -> None:
        if self.up["hub"]:  # (while it is away, the poll is what asks it)
            self.guard("hub", self.deliver)
            self.guard("hub", self.discovery)  # (a changed policy makes the report due)
            if time.monotonic() >= self._report_due:
                self.guard("hub", self.report)
        if self.guard("hub", self.poll) is None:
            self.work()  # the hub is away or refuses: the jobs in flight go on meanwhile
            time.sleep(AWAY_SECONDS)  # and it is asked again, gently

    def poll(self) -> bool:
        known = self.waiting + self.running + self.sending + self.failing
        # jobs the agent knows already (a run in flight, a steward's decision awaited) do not
        # end the long poll; while there are any, the poll is short, so their runs (and the
        # steward's decisions, local files) are looked at again within a second or two
        answer = self.hub.get("/jobs", wait=BUSY_POLL_SECONDS if known else POLL_SECONDS,
                              skip=",".join(known))
        if answer.status_code in BUSY:
            raise self.hub.unavailable(answer, "the job poll")
        if answer.status_code != 200:
            raise SiteError(f"the hub answered HTTP {answer.status_code} to the job poll",
                            fix="the site may be revoked: ask the hub's operator")
        jobs = {job["id"]: job for job in answer.json()["jobs"]}
        if set(jobs) - set(self.jobs):
            self._report_due = 0.0  # a new job: the hub's fleet table counts it at once
        self.jobs = jobs
        self.work()
        return True

    def report(self) -> bool:
        """Post the site's report about itself (its versions, models, approvals, policy,
        health, last job: radflow.federation.fleet) to the hub; again after REPORT_SECONDS.
        A report that cannot be made is logged and skipped: the jobs come first."""
        from radflow.federation.fleet import REPORT_SECONDS, site_report

        self._report_due = time.monotonic() + REPORT_SECONDS
        self.beat()  # (its own heartbeat is what `site status` probes it by)
        try:
            body = site_report(self.ctx)
        except Exception:  # a probe that fails must not stop the job poll
            self.logger.warning("the site report could not be made", exc_info=True)
            return False
        if body["health"]["state"] != "running":  # starting, or a part down: told again soon
            self._report_due = time.monotonic() + UNSETTLED_REPORT_SECONDS
        answer = self.hub.post("/report", body)
        if answer.status_code in BUSY:
            self._report_due = 0.0  # asked again once the hub is back
            raise self.hub.unavailable(answer, "the site report")
        if answer.status_code != 200:  # (a hub older than the fleet answers 404)
            self.logger.warning("the hub answered HTTP %s to the site report",
                                answer.status_code)
            return False
        from radflow.federation.access import refresh

        try:  # the access requests naming this site, for its steward (Federation page)
            refresh(self.root, self.hub)
        except (RadflowError, OSError, ValueError) as exc:  # (an older hub answers 404)
            if isinstance(exc, HubUnavailable):
                raise
            self.logger.warning("the access requests were not fetched: %s",
                                getattr(exc, "message", None) or type(exc).__name__)
        return True

    def discovery(self) -> None:
        """The collection summary, when due (:class:`radflow.federation.discovery.Publisher`);
        a changed policy also makes the site's report due (the hub's readiness reads it)."""
        if self.publisher.step():
            self._report_due = 0.0

    def work(self) -> None:
        """Take each known job one step further (:meth:`handle`)."""
        self.waiting, self.running, self.sending, self.failing = [], [], [], []
        for job in self.jobs.values():
            if self.guard("prefect", lambda job=job: [self.handle(job)]) is None:
                self.failing.append(job["id"])  # tried again on the next (short) poll
        self.manifests = {k: v for k, v in self.manifests.items() if k in self.jobs}

    def mark(self, dependency: str, up: bool, exc: BaseException | None = None) -> None:
        """As :meth:`ServiceLoop.mark`; the hub's absence met while a job is looked at
        (fetching its version) is the hub's, not Prefect's."""
        super().mark("hub" if isinstance(exc, HubUnavailable) else dependency, up, exc)

    def _hub_back(self) -> None:
        self._retry_now = True
        self._report_due = 0.0  # the hub hears of the site again at once

    def detail(self) -> dict[str, Any]:
        parts = [f"joined {self.hub.info['url']}"]
        for jobs, what in ((self.running, "running"), (self.waiting, "await a steward"),
                           (self.sending, "being posted")):
            if jobs:
                parts.append(f"{len(jobs)} job(s) {what}")
        return {"detail": "; ".join(parts)}

    # -- one job ------------------------------------------------------------------------------
    def handle(self, job: dict[str, Any]) -> str | None:
        """Take one job one step further, without waiting; returns the outcome once it is
        decided (``released`` or the refusal code), else None. Its row in ``federation_job``
        says how far it got before (a restarted agent goes on from there)."""
        from radflow.federation.egress import gate

        url = self.ctx.catalog_url
        row = steward.received(url, job)
        if row.state in steward.DECIDED:
            if row.state == "sending":
                self.sending.append(job["id"])  # the outbox delivers it
            elif job["id"] not in self._warned:  # the hub lists it still: it refused the post
                self._warned.add(job["id"])
                self.logger.warning("job %s: %s already (%s); not posting again", job["id"],
                                    row.state, row.outcome)
            return None
        policy = load_policy(self.root)
        if job["version"] not in policy.approved:
            return self.decide(job, refusal="not_approved")
        if (policy.job_mode == "manual" and row.accepted_by is None) \
                or (policy.manual_release and steward.undecided(url, job["id"])):
            self.waiting.append(job["id"])  # a steward decides first
            return None
        if row.flow_run_id is None:
            return self.start(job)
        run = self.prefect.flow_run(row.flow_run_id)
        if not run.is_final:
            self.running.append(job["id"])
            return None
        manifest = self.manifests.get(job["id"])
        if manifest is None:  # (started by this agent before a restart): verified again
            refused, manifest = self.verify(job)
            if refused:
                return refused
        if not run.ok:
            self.logger.warning("job %s: the site part ended %s", job["id"], run.state)
            return self.decide(job, refusal="site_part_failed")
        out = self.root / "federation" / "jobs" / f"{job['id']}.json"
        release = json.loads(out.read_text()).get("release") if out.exists() else None
        if release is None:
            return self.decide(job, refusal="site_part_failed")
        result = gate(release, manifest.release_schema, policy, job["params"])
        if not result.ok:
            self.logger.warning("job %s: the egress gate refused: %s (%s)", job["id"],
                                result.refusal, result.detail or "")
            return self.decide(job, refusal=result.refusal, detail=result.detail)
        if policy.manual_release:  # a steward approves exactly this JSON first
            decision = steward.release_decision(url, job, result.released, result.suppressed,
                                                policy.summary())
            if decision == "declined":  # (decided before the outbox existed)
                return self.decide(job, refusal="declined")
            if decision == "pending":
                self.waiting.append(job["id"])
                return None
        return self.decide(job, release=result.released, suppressed=result.suppressed)

    def verify(self, job: dict[str, Any]) -> tuple[str | None, Any]:
        """The job's version, verified: (None, manifest), or (the refusal decided, None)."""
        from radflow.federation.manifest import missing_plugins, unmet_requirements
        from radflow.federation.signing import SignatureInvalid
        from radflow.federation.versions import UnsupportedVersion

        try:
            signed, files = self.fetch(self.root, job["version"])
        except SignatureInvalid as exc:
            self.logger.warning("job %s: version %s refused: %s", job["id"], job["version"],
                                exc.message)
            return self.decide(job, refusal="bad_signature"), None
        except UnsupportedVersion as exc:
            self.logger.warning("job %s: %s", job["id"], exc.message)
            return self.decide(job, refusal="unsupported_version"), None
        missing = missing_plugins(signed.manifest)
        if missing:
            return self.decide(job, refusal=missing[0]), None
        unmet = unmet_requirements(signed.manifest)
        if unmet:  # refused before anything runs, saying what to upgrade
            detail = "; ".join(f"{u.message}: {u.fix}" for u in unmet)
            self.logger.warning("job %s: version %s %s", job["id"], job["version"], detail)
            return self.decide(job, refusal=unmet[0].refusal, detail=detail), None
        self.install(job["version"], files)
        self.manifests[job["id"]] = signed.manifest
        return None, signed.manifest

    def start(self, job: dict[str, Any]) -> str | None:
        """Verify and install the version, and start the site part (never waits for it). The
        job id is also the run's idempotency key: never two runs of one job."""
        refused, manifest = self.verify(job)
        if refused:
            return refused
        policy = load_policy(self.root)
        if policy.require_access_request:  # under an approved request only
            from radflow.federation.access import cohort_hash, permits

            if permits(self.ctx.catalog_url, manifest.name, cohort_hash(job["params"])) is None:
                return self.decide(job, refusal="no_access_request", detail=(
                    f"no access request this site approved covers {manifest.name} on this "
                    "cohort (require_access_request)"))
        if releases_weights(manifest.release_schema, job["params"]) and \
                not policy.allow_weights:  # refused before any work is done
            self.logger.warning("job %s: the round releases model weights; this site's "
                                "policy does not allow them (allow_weights)", job["id"])
            return self.decide(job, refusal="policy_violation:weights",
                               detail="the round releases model weights (allow_weights is off)")
        from radflow.flows.federated_job import PARAMS_INLINE_BYTES, write_params

        arguments = {"job_id": job["id"], "version_hash": job["version"],
                     "entrypoint": manifest.site_entrypoint, "params": job["params"],
                     "site": self.ctx.name, "study": job["study"]}
        if len(json.dumps(job["params"])) > PARAMS_INLINE_BYTES:  # a model's weights
            write_params(self.root, job["id"], job["params"])
            arguments |= {"params": None, "params_in_file": True}
        run = self.prefect.create_flow_run(f"federated-job/{self.ctx.name}", arguments,
            idempotency_key=f"federated-job-{job['id']}",
            tags=(f"version:{job['version'][7:19]}", f"study:{job['study']}"))
        steward.started(self.ctx.catalog_url, job, run.id)
        self.running.append(job["id"])
        self.logger.info("job %s: site part started (flow run %s)", job["id"], run.id)
        return None

    def install(self, version_hash: str, files: dict[str, bytes]) -> Path:
        from radflow.flows.federated_job import bundle_dir

        folder = bundle_dir(self.root, version_hash)
        for rel, data in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
        return folder

    # -- the outcome --------------------------------------------------------------------------
    def decide(self, job: dict[str, Any], release: dict | None = None,
               refusal: str | None = None, suppressed: list[str] | None = None,
               detail: str | None = None) -> str:
        """Decide the job's outcome (job row, audit event and outbox entry in one transaction),
        then post it; the post is retried on later ticks until the hub acknowledges."""
        from radflow.flows.federated_job import params_file

        outcome = refusal or "released"
        params_file(self.root, job["id"]).unlink(missing_ok=True)  # its run is over
        entry = steward.decide(self.ctx.catalog_url, job, actor=ACTOR, release=release,
                               refusal=refusal, suppressed=suppressed,
                               policy=load_policy(self.root).summary(), detail=detail)
        if entry is None:
            self.logger.warning("job %s: decided before; not deciding again", job["id"])
            return outcome
        self.logger.info("job %s: %s", job["id"], outcome)
        crash_point("agent.after_decide")
        self._report_due = 0.0  # the job is done here: the fleet's last job and queue follow
        try:
            outbox.deliver_one(self.ctx.catalog_url, entry, self.send, steward.on_posted)
        except (RadflowError, RequestException) as exc:  # recorded; retried on a later tick
            self.logger.warning("job %s: the post waits for a retry: %s", job["id"],
                                getattr(exc, "message", None) or type(exc).__name__)
            self.sending.append(job["id"])
        return outcome

    def deliver(self) -> int:
        """Post what the outbox holds (decided before a restart, approved by a steward, or
        not acknowledged yet)."""
        from radflow.federation.access import send_decision

        retry_now, self._retry_now = self._retry_now, False
        outbox.deliver(self.ctx.catalog_url, "hub.access", lambda entry: send_decision(
            self.hub, entry), log=self.logger, retry_now=retry_now)
        return outbox.deliver(self.ctx.catalog_url, "hub.post", self.send,
                              on_done=steward.on_posted, log=self.logger, retry_now=retry_now)

    def send(self, entry: OutboxEntry) -> str:
        """Post one job's result; the hub's answer (``recorded`` or ``already``).

        Raises:
            Undeliverable: the hub refused it for good (an unknown job, a missed deadline, a
                different result already, a body it does not accept).
            SiteError: any other answer (retried).
        """
        answer = self.hub.post(f"/jobs/{entry.target}/result", outbox.payload(entry))
        if answer.status_code == 200:
            return str(answer.json()["status"])
        try:
            said = answer.json()
            reason = ": ".join(str(said[k]) for k in ("error", "reason", "detail") if said.get(k))
        except (ValueError, AttributeError):
            reason = answer.text[:200]
        if 400 <= answer.status_code < 500 and answer.status_code not in (401, 403, 408, 429):
            raise outbox.Undeliverable(f"the hub refused the result of job {entry.target}: "
                                       f"HTTP {answer.status_code} {reason}",
                                       fix="see the hub's log")
        raise SiteError(f"the hub did not take the result of job {entry.target} (HTTP "
                        f"{answer.status_code} {reason})", fix="it is posted again; see the "
                                                               "hub's log")


def releases_weights(schema: Any, params: dict[str, Any]) -> bool:
    """Whether the job's round would release model weights (a ``weights`` field)."""
    try:
        fields = schema.for_round((params or {}).get("round")).fields
    except ValueError:
        return False  # (the gate refuses a job that names no round of the flow)
    return any(spec.kind == "weights" for spec in fields.values())


def main(argv: list[str] | None = None) -> int:
    from radflow.service import run_site_service

    return run_site_service("python -m radflow.federation.agent", lambda ctx: Agent(
        ctx, heartbeat=ctx.paths.run / "agent.json"), argv)

if __name__ == "__main__":
    sys.exit(main())
