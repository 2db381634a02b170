"""Faults across the hub and a site's agent, with every part real: the hub (`radflow hub up`: its
Prefect server, worker, federation API, provider and web app), the session's site 'alpha' with
its own Orthanc, Prefect, worker and agent, and between the two a TCP proxy that can cut the
link. A second site, 'beta', is a plain hub client driven by the test: it answers its jobs at
once, so that a round can be caught with one site's release posted and the other's not.

1. The hub is killed (SIGKILL, every process of it, the coordinator's flow run included) while
   the second round of a two-round study is in flight: beta has posted, alpha's site part runs.
   Alpha decides its outcome while the hub is away (it waits in the outbox); `radflow hub up`
   brings the hub back while alpha's link is still cut, and the coordinator, run again, finds the
   second round queued and waits for alpha's part (no round queued twice); once the link is back
   alpha posts, the coordinator's `radflow study run` (waiting all along) prints the result, and
   each job's row at the site agrees with the hub; nothing was posted twice and the site's audit
   log verifies.
2. The link between alpha and the hub is cut for longer than a token lives (the hub's token life
   made short for the test): a job queued meanwhile is taken once the link is back, with a new
   token; its post meets a token the hub has let expire (401) and goes through with a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from conftest import RADFLOW, free_port, send, wait_settled
from federation_checks import hub_jobs, hub_processes, newest_study, poll
from link_proxy import LinkProxy
from sqlalchemy import update
from sqlmodel import Session, col, create_engine, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, OutboxEntry
from radflow.cohorts.definition import parse_short
from radflow.federation.client import HubClient, join
from radflow.federation.policy import SitePolicy, policy_path, save_policy
from radflow.federation.steward import job_row
from radflow.flows.federated_job import params_file
from radflow.hub.home import HubHome
from radflow.hub.models import HubToken
from radflow.hub.recovery import coordinated

pytestmark = [pytest.mark.services, pytest.mark.slow]
TWO_ROUNDS = Path(__file__).parent / "data" / "flows" / "fault-two-rounds"
COUNT = "federation/flows/federated-cohort-count"
TOKEN_SECONDS = 12  # the hub's token life in these tests (RADFLOW_HUB_TOKEN_SECONDS)


@pytest.fixture(scope="module")
def faults(site, manager, synth_dir, tmp_path_factory):
    """A hub behind a LinkProxy with a short token life; alpha joined through the proxy (its
    agent running); beta enrolled as a plain client; both flows published and approved."""
    hub_home = tmp_path_factory.mktemp("fault-hub")
    env = {**os.environ, "RADFLOW_HOME": str(hub_home),
           "RADFLOW_HUB_TOKEN_SECONDS": str(TOKEN_SECONDS)}

    def hub_cli(*args: str) -> dict:
        proc = subprocess.run([*RADFLOW, *args, "--json"], env=env, capture_output=True,
                              text=True, timeout=400, check=False)
        assert proc.returncode == 0, f"radflow {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    api_port = free_port()
    proxy = LinkProxy(api_port)
    hub_cli("hub", "up", "--port", str(api_port), "--prefect-port", str(free_port()),
            "--web-port", str(free_port()), "--idp-port", str(free_port()),
            "--public-url", proxy.url)
    try:
        join(proxy.url, "alpha", hub_cli("hub", "site", "add", "alpha")["code"],
             site.paths.root)
        beta_root = tmp_path_factory.mktemp("beta") / "beta"
        join(proxy.url, "beta", hub_cli("hub", "site", "add", "beta")["code"], beta_root)
        versions = {"two": hub_cli("publish", str(TWO_ROUNDS))["hash"],
                    "count": hub_cli("publish", COUNT)["hash"]}
        save_policy(site.paths.root, SitePolicy(approved=list(versions.values()),
                                                job_mode="auto", min_cohort=2, min_cell=2))
        manager.up("alpha")  # starts its agent, now enabled
        assert manager.status("alpha").component("agent").state == "running"
        cohort = tmp_path_factory.mktemp("cohort") / "cohort.json"
        cohort.write_text(parse_short(["modality=CT"]).canonical_json())
        yield {"hub_cli": hub_cli, "env": env, "hub_home": hub_home, "proxy": proxy,
               "alpha": site, "beta": HubClient(beta_root), "cohort": cohort,
               "engine": create_engine(f"sqlite:///{hub_home / 'hub' / 'hub.db'}")}
    finally:
        from radflow.site.components import component

        component("agent").process(site).stop()
        subprocess.run([*RADFLOW, "hub", "down"], env=env, capture_output=True, timeout=120,
                       check=False)
        proxy.close()
        shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
        policy_path(site.paths.root).unlink(missing_ok=True)


def beta_answers(beta: HubClient, study: str) -> list[str]:
    """beta posts a release for each of its open jobs of ``study``; returns their ids."""
    posted = []
    for job in beta.get("/jobs", wait=0).json()["jobs"]:
        if job["study"] == study:
            answer = beta.post(f"/jobs/{job['id']}/result",
                               {"release": {"n": 9, "matching": 4}})
            assert answer.status_code == 200, answer.text
            posted.append(job["id"])
    return posted


def agent_log(site) -> Path:
    return site.paths.logs / "agent.log"


def state_of(site, job_id: str) -> str | None:
    row = job_row(site.catalog_url, job_id)
    return row.state if row is not None else None


def heartbeat(site) -> dict:
    return json.loads((site.paths.run / "agent.json").read_text())


def audit_of(site, job_id: str) -> list[str]:
    with session_scope(site.catalog_url) as session:
        return [e.action for e in session.exec(select(AuditEvent).where(
            AuditEvent.subject == f"job:{job_id}").order_by(col(AuditEvent.seq)))]


def outbox_of(site, job_id: str) -> list[OutboxEntry]:
    with session_scope(site.catalog_url) as session:
        rows = list(session.exec(select(OutboxEntry).where(OutboxEntry.target == job_id)))
        for row in rows:
            session.expunge(row)
        return rows


def test_the_hub_killed_during_a_round(faults, manager, cli) -> None:
    alpha, beta, engine = faults["alpha"], faults["beta"], faults["engine"]
    from radflow.site.components import component

    agent_pid = component("agent").process(alpha).pid
    began = datetime.now(UTC) - timedelta(seconds=1)
    runner = subprocess.Popen([*RADFLOW, "study", "run", "fault-two-rounds", "--cohort",
                               str(faults["cohort"]), "--deadline", "300", "--json"],
                              env=faults["env"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        study = poll(lambda: newest_study(engine, "fault-two-rounds", began), 120,
                     "the study's first round")
        assert poll(lambda: beta_answers(beta, study), 60, "beta's first job")
        poll(lambda: any(j.round == 1 for j in hub_jobs(engine, study)), 180,
             "the second round (alpha answers the first)")
        assert poll(lambda: beta_answers(beta, study), 60, "beta's second job")
        (second,) = [j.id for j in hub_jobs(engine, study) if j.round == 1 and j.site == "alpha"]
        poll(lambda: state_of(alpha, second) == "running", 120,
             "alpha's second job running at the site", every=0.05)
        # its parameters (0.5 MB, as a small model's weights) went to the run by file, not
        # into the site's Prefect database
        assert params_file(alpha.paths.root, second).stat().st_mode & 0o077 == 0
        (run,) = [r for r in alpha.prefect().flow_runs_tagged(f"study:{study}")
                  if r.parameters.get("job_id") == second]
        assert run.parameters["params"] is None and run.parameters["params_in_file"] is True

        # the hub dies: every process of it, the coordinator's flow run included
        processes = hub_processes(faults["hub_home"])
        assert len(processes["worker"]) > 1, "the coordinator's flow run is the worker's child"
        doomed = [p for group in processes.values() for p in group]
        for proc in doomed:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(doomed, timeout=30)
        jobs = hub_jobs(engine, study)
        assert [(j.round, j.site, j.status) for j in jobs] == [
            (0, "alpha", "released"), (0, "beta", "released"),
            (1, "alpha", "queued"), (1, "beta", "released")]

        # alpha goes on without the hub: its outcome is decided and waits in the outbox
        poll(lambda: state_of(alpha, second) == "sending", 120,
             "alpha's outcome decided while the hub is away")
        # the entry is written with the decision; the sender's first try follows it
        poll(lambda: outbox_of(alpha, second)[0].attempts >= 1, 60,
             "alpha's first try to post its outcome", every=0.1)
        (entry,) = outbox_of(alpha, second)
        assert entry.state == "pending" and entry.attempts >= 1 and entry.last_error
        assert component("agent").process(alpha).pid == agent_pid  # no crash, no restart
        assert poll(lambda: heartbeat(alpha)["dependencies"]["hub"] == "down", 30,
                    "the agent to see the hub away")

        # the hub comes back, alpha's link to it not yet: the coordinator, run again, finds
        # the second round queued and waits for alpha's part of it
        faults["proxy"].cut()
        try:
            faults["hub_cli"]("hub", "up")
            hub = HubHome.of(faults["hub_home"])
            poll(lambda: coordinated(hub.root, study), 120, "the coordinator run again")
            assert [(j.site, j.status) for j in hub_jobs(engine, study) if j.round == 1] == [
                ("alpha", "queued"), ("beta", "released")]
        finally:
            faults["proxy"].restore()
        out, err = runner.communicate(timeout=400)
    finally:
        if runner.poll() is None:
            runner.kill()
        # idempotent, and the next tests need the hub whether this one failed or not
        subprocess.run([*RADFLOW, "hub", "up"], env=faults["env"], capture_output=True,
                       timeout=400, check=False)
    assert runner.returncode == 0, f"{out}\n{err}"
    result = json.loads(out)
    assert result["study"] == study
    assert [r["round"] for r in result["rounds"]] == ["first", "second"]
    assert {s["site"]: s["status"] for s in result["sites"]} == {"alpha": "released",
                                                                "beta": "released"}
    assert result["combined"]["sites_second"] == ["alpha", "beta"]
    # the site part was told its study (it keeps state between rounds by it); the big
    # parameters' file is gone once the job was decided
    kept = json.loads((alpha.paths.root / "federation" / "jobs" / f"{second}.json").read_text())
    assert kept["local"]["study"] == study
    assert not params_file(alpha.paths.root, second).exists()

    # the hub: one job per site and round (no round queued twice), each answered once
    jobs = hub_jobs(engine, study)
    assert [(j.round, j.site, j.status) for j in jobs] == [
        (0, "alpha", "released"), (0, "beta", "released"),
        (1, "alpha", "released"), (1, "beta", "released")]
    runs = json.loads(subprocess.run(
        [*RADFLOW, "study", "show", study, "--json"], env=faults["env"], capture_output=True,
        text=True, timeout=60, check=True).stdout)
    assert runs["sites"] == result["sites"]
    coordinators = HubHome.of(faults["hub_home"]).prefect().flow_runs_tagged(f"study:{study}")
    assert [r.state for r in coordinators] == ["COMPLETED", "CRASHED"]  # newest first
    assert "resumed" in (coordinators[1].message or "")

    # the site: each job's row agrees with the hub; one post and one release event per job
    for job in (j for j in jobs if j.site == "alpha"):
        row = job_row(alpha.catalog_url, job.id)
        assert (row.state, row.outcome) == ("posted", "released"), job.id
        assert audit_of(alpha, job.id) == ["federation.released"]
        assert [(e.state, e.answer) for e in outbox_of(alpha, job.id)] == [
            ("acknowledged", "recorded")]
    assert beta.get("/jobs", wait=0).json()["jobs"] == []
    verify = cli("site", "audit", "verify", "--site", "alpha")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_link_cut_for_longer_than_a_token_lives(faults, cli) -> None:
    alpha, proxy, engine = faults["alpha"], faults["proxy"], faults["engine"]
    from radflow.site.components import component

    agent_pid = component("agent").process(alpha).pid
    log_from = agent_log(alpha).stat().st_size
    cut_at = time.time()  # (before: the agent may see the reset and beat within the call)
    proxy.cut()
    started = faults["hub_cli"]("study", "run", "federated-cohort-count", "--cohort",
                                str(faults["cohort"]), "--sites", "alpha", "--deadline", "300",
                                "--no-wait")
    study = started["study"]
    (job,) = poll(lambda: hub_jobs(engine, study), 120, "the study's job at the hub")
    assert job.status == "queued" and job.site == "alpha"

    def tokens_alive() -> list[HubToken]:
        with Session(engine) as session:
            return list(session.exec(select(HubToken).where(
                HubToken.site == "alpha", HubToken.expires_at > datetime.now(UTC))))

    # the cut outlasts every token alpha holds
    poll(lambda: not tokens_alive(), TOKEN_SECONDS + 60, "alpha's last token to expire")
    assert component("agent").process(alpha).pid == agent_pid
    beat = poll(lambda: (b := heartbeat(alpha))["dependencies"]["hub"] == "down" and b, 60,
                "alpha's heartbeat to say the hub is down")  # (its poll's retries take seconds)
    assert beat["time"] > cut_at
    assert manager_state(alpha) == "running"  # its heartbeat is fresh
    assert job_row(alpha.catalog_url, job.id) is None  # it has not seen the job

    def expire_at_the_hub(line: str) -> None:
        """The token alpha holds expires at the hub between its poll and its post."""
        if line == f"POST /v1/sites/alpha/jobs/{job.id}/result":
            proxy.before_request = None
            with Session(engine) as session:
                session.exec(update(HubToken).where(HubToken.site == "alpha").values(
                    expires_at=datetime.now(UTC) - timedelta(seconds=1)))
                session.commit()

    proxy.before_request = expire_at_the_hub
    restored = len(proxy.exchanges)
    proxy.restore()
    result_file = faults["hub_home"] / "hub" / "studies" / study / "result.json"
    poll(result_file.exists, 240, "the study's result")
    result = json.loads(result_file.read_text())
    assert [s["status"] for s in result["sites"]] == ["released"]
    assert result["combined"]["sites_released"] == 1

    seen = [(e["request"], e["status"]) for e in proxy.exchanges[restored:]]
    tokens = [i for i, (request, _) in enumerate(seen) if request == "POST /oauth/token"]
    polls = [i for i, (request, status) in enumerate(seen)
             if request == "GET /v1/sites/alpha/jobs" and status == 200]
    assert tokens and polls and tokens[0] < polls[0]  # a new token before the first poll
    posts = [(i, status) for i, (request, status) in enumerate(seen)
             if request == f"POST /v1/sites/alpha/jobs/{job.id}/result"]
    assert [status for _, status in posts] == [401, 200], seen
    assert any(posts[0][0] < i < posts[1][0] for i in tokens)  # with a new token
    row = job_row(alpha.catalog_url, job.id)
    assert (row.state, row.outcome) == ("posted", "released")
    assert audit_of(alpha, job.id) == ["federation.released"]
    assert [(e.state, e.answer) for e in outbox_of(alpha, job.id)] == [
        ("acknowledged", "recorded")]
    assert component("agent").process(alpha).pid == agent_pid
    logged = agent_log(alpha).read_bytes()[log_from:].decode(errors="replace")
    assert logged.count("hub is unreachable") == 1, logged  # said once, not once a tick
    assert "reachable again" in logged and "Traceback" not in logged


def manager_state(site) -> str:
    from radflow.site import SiteManager

    return SiteManager(site.settings).status(site.name).component("agent").state
