"""Effects through the outbox, with processes killed (SIGKILL, at crash points named in
RADFLOW_CRASH_AT) between every two steps from "decided" to "acknowledged", against the real
parts: a hub (federation API), the session's site 'alpha' with its Orthanc, Prefect, worker and
review keeper, real agent processes and the real CLI.

After each restart the hub holds the release once, the site's audit log holds one
``federation.released`` for it (one ``review.decided`` for a review, whose case run is resumed
once), and `radflow site audit verify` passes. The agent's loop never waits on a job: its
heartbeat stays current while two site parts run, and `site up` on the running site keeps it
running. The review keeper goes on past a review whose run Prefect does not know."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import RADFLOW, send, wait_settled
from sqlmodel import select
from test_faults import wait_until
from test_hub_enrolment import PACKAGE, published

from radflow import outbox
from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Review, utcnow
from radflow.cohorts.definition import parse_short
from radflow.faults import ENV
from radflow.federation import steward
from radflow.federation.client import join
from radflow.federation.policy import SitePolicy, policy_path, save_policy
from radflow.hub import registry, study_jobs
from radflow.site.components import component

pytestmark = [pytest.mark.services, pytest.mark.slow]
COHORT = parse_short(["modality=CT"]).canonical()


@pytest.fixture(scope="module")
def federated(site, hub, synth_dir):
    """alpha joined to this module's hub, its agent component stopped (the tests run agent
    processes of their own), and the count's version approved; left as it was afterwards."""
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    join(hub["url"], "alpha", registry.add_site(hub["engine"], "alpha"), site.paths.root)
    component("agent").process(site).stop()
    version = published(hub)
    save_policy(site.paths.root, SitePolicy(approved=[version], job_mode="auto", min_cohort=2,
                                            min_cell=2))
    yield version
    component("agent").process(site).stop()
    registry.revoke_site(hub["engine"], "alpha")
    shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
    policy_path(site.paths.root).unlink(missing_ok=True)


def agent(site, log: Path, crash_at: str | None = None) -> subprocess.Popen:
    """An agent process of the site, as `radflow site up` starts it (with a crash point)."""
    argv, env = component("agent").command(site)
    env.pop(ENV, None)
    if crash_at:
        env[ENV] = crash_at
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=site.paths.root)


def killed(proc: subprocess.Popen, log: Path, point: str) -> None:
    """The process reached ``point`` and died there (SIGKILL)."""
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"it never reached {point}:\n{log.read_text()[-3000:]}") from None
    assert code == -signal.SIGKILL, (point, code, log.read_text()[-3000:])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def audit_of(site, subject: str) -> list[AuditEvent]:
    with session_scope(site.catalog_url) as session:
        found = list(session.exec(select(AuditEvent).where(AuditEvent.subject == subject)
                                  .order_by(AuditEvent.seq)))
        for event in found:
            session.expunge(event)
        return found


def hub_job(hub, job_id: str):
    from sqlmodel import Session

    from radflow.hub.models import HubJob

    with Session(hub["engine"]) as session:
        row = session.get(HubJob, job_id)
        session.expunge(row)
        return row


def released_once(site, hub, cli, job_id: str, answer: str) -> dict:
    """The hub holds the job's release, the site's audit log one ``federation.released`` for
    it, the outbox one acknowledged post (``answer``: the hub's), and the log verifies."""
    row = steward.job_row(site.catalog_url, job_id)
    assert (row.state, row.outcome) == ("posted", "released")
    at_hub = hub_job(hub, job_id)
    assert at_hub.status == "released"
    events = audit_of(site, f"job:{job_id}")
    (released,) = [e for e in events if e.action == "federation.released"]
    assert json.loads(at_hub.release) == json.loads(released.detail)["release"]
    (entry,) = outbox.entries(site.catalog_url, subject=f"job:{job_id}")
    assert (entry.state, entry.answer) == ("acknowledged", answer)
    assert verify(site.catalog_url).ok
    proc = cli("site", "audit", "verify", "--site", "alpha", "--json", check=True)
    assert json.loads(proc.stdout)["ok"] is True
    return json.loads(at_hub.release)


def test_the_agent_killed_between_decision_and_post_posts_once(federated, site, hub, cli,
                                                              tmp_path) -> None:
    _, (job,) = study_jobs.start_study(hub["engine"], "federated-cohort-count",
                                       {"cohort": COHORT}, ["alpha"], deadline_s=900)
    log = tmp_path / "agent.log"
    # 1. killed right after the decision committed: nothing was sent
    killed(agent(site, log, "agent.after_decide"), log, "agent.after_decide")
    row = steward.job_row(site.catalog_url, job.id)
    assert (row.state, row.outcome) == ("sending", "released")
    assert hub_job(hub, job.id).status in ("queued", "taken")
    (entry,) = outbox.entries(site.catalog_url, subject=f"job:{job.id}")
    assert (entry.state, entry.attempts) == ("pending", 0)
    # 2. restarted, it posts what was decided, and is killed before it records the answer
    killed(agent(site, log, "outbox.after_send"), log, "outbox.after_send")
    assert hub_job(hub, job.id).status == "released"
    assert outbox.entries(site.catalog_url, subject=f"job:{job.id}")[0].state == "pending"
    # 3. restarted again: the post again, which the hub answers "already"
    clean = agent(site, log)
    try:
        wait_until(lambda: steward.job_row(site.catalog_url, job.id).state == "posted", 180,
                   "the job was not posted")
    finally:
        stop(clean)
    release = released_once(site, hub, cli, job.id, "already")
    assert set(release) == {"n", "matching"}
    assert log.read_text().count(f"job {job.id}: released") == 1  # decided once


def test_a_stewards_release_survives_kills_and_leaves_once(federated, site, hub, cli,
                                                          tmp_path) -> None:
    save_policy(site.paths.root, SitePolicy(approved=[federated], job_mode="auto",
                                            manual_release=True, min_cohort=2, min_cell=2))
    try:
        _, (job,) = study_jobs.start_study(hub["engine"], "federated-cohort-count",
                                           {"cohort": COHORT}, ["alpha"], deadline_s=900)
        log = tmp_path / "agent.log"
        first = agent(site, log)
        try:
            (waiting,) = wait_until(lambda: steward.pending_releases(site.catalog_url), 240,
                                    "the release did not wait for a steward")
        finally:
            stop(first)
        assert waiting["job"] == job.id and hub_job(hub, job.id).status in ("queued", "taken")
        # the steward's command is killed right after the approval committed
        approve = subprocess.run([*RADFLOW, "site", "releases", "approve", job.id, "--hash",
                                  waiting["hash"], "--site", "alpha"],
                                 env={**os.environ, ENV: "steward.after_decide"},
                                 capture_output=True, text=True, timeout=120, check=False)
        assert approve.returncode == -signal.SIGKILL, approve.stderr
        assert steward.job_row(site.catalog_url, job.id).state == "sending"
        assert [e.action for e in audit_of(site, f"job:{job.id}")][-2:] == [
            "federation.release_approved", "federation.released"]
        # the agent posts it, and is killed before it records the hub's answer
        killed(agent(site, log, "outbox.after_send"), log, "outbox.after_send")
        assert hub_job(hub, job.id).status == "released"
        clean = agent(site, log)
        try:
            wait_until(lambda: steward.job_row(site.catalog_url, job.id).state == "posted",
                       180, "the job was not posted")
        finally:
            stop(clean)
    finally:
        save_policy(site.paths.root, SitePolicy(approved=[federated], job_mode="auto",
                                                min_cohort=2, min_cell=2))
    assert released_once(site, hub, cli, job.id, "already") == waiting["release"]
    approvals = [e for e in audit_of(site, f"job:{job.id}")
                 if e.action == "federation.release_approved"]
    assert len(approvals) == 1 and approvals[0].actor.startswith("cli:")


def held_version(hub, folder: Path) -> str:
    """A version of the count whose site part waits while the file named by its parameter
    ``hold`` exists (a site part that takes as long as the test wants)."""
    from radflow.federation.bundle import build
    from radflow.federation.manifest import sign_version
    from radflow.federation.signing import load

    shutil.copytree(PACKAGE, folder)
    spec = folder / "radflow-flow.yaml"
    spec.write_text(spec.read_text()
                    .replace("name: federated-cohort-count", "name: federated-held-count")
                    .replace("site.py:count_cohort", "site.py:held_count")
                    .replace("  required: [cohort]", "    hold: {type: string}\n"
                                                     "  required: [cohort, hold]"))
    with (folder / "site.py").open("a") as out:
        out.write("\n\ndef held_count(cohort, hold, site=None):\n"
                  "    import time\n    from pathlib import Path\n\n"
                  "    while Path(hold).exists():\n        time.sleep(0.2)\n"
                  "    return count_cohort(cohort, site=site)\n")
    manifest, bundle = build(folder, publisher="test@hub")
    signed = sign_version(manifest, load(hub["folder"] / "hub.key"))
    registry.publish(hub["engine"], signed, bundle)
    return signed.hash


def test_the_agent_beats_while_site_parts_run_and_site_up_keeps_the_site(
        federated, site, hub, manager, cli, tmp_path) -> None:
    """Two jobs whose site parts run until the test lets them end: the agent (the site's own
    component) starts both, and while they run its heartbeat is rewritten again and again and
    `radflow site status` calls it healthy. (With a loop that waits on a job, the heartbeat
    stops for as long as the job runs: 24 h at most, 60 s make it stale.) `site up` on the
    running site changes nothing; with the agent stuck, it restarts the agent alone."""
    held = held_version(hub, tmp_path / "held")
    save_policy(site.paths.root, SitePolicy(approved=[federated, held], job_mode="auto",
                                            min_cohort=2, min_cell=2))
    hold = tmp_path / "hold"
    hold.touch()
    jobs = [study_jobs.start_study(hub["engine"], "federated-held-count",
                                   {"cohort": COHORT, "hold": str(hold)}, ["alpha"],
                                   deadline_s=900)[1][0] for _ in range(2)]
    before = {c.name: c.pid for c in manager.status("alpha").components}
    manager.up("alpha")  # starts the agent; everything else stays as it is
    after = {c.name: c.pid for c in manager.status("alpha").components}
    assert before["agent"] is None and after["agent"] is not None
    assert {k: v for k, v in after.items() if k != "agent"} == \
        {k: v for k, v in before.items() if k != "agent"}
    api = site.prefect()

    def both_running() -> bool:
        rows = [steward.job_row(site.catalog_url, j.id) for j in jobs]
        return all(r is not None and r.flow_run_id
                   and api.flow_run(r.flow_run_id).state == "RUNNING" for r in rows)

    wait_until(both_running, 240, "the two site parts did not run at once")
    heartbeat = site.paths.run / "agent.json"
    beats: set[float] = set()
    while len(beats) < 5:  # the heartbeat, rewritten while both site parts still run
        beats.add(json.loads(heartbeat.read_text())["time"])
        assert both_running()
        time.sleep(0.5)
    status = json.loads(cli("site", "status", "--site", "alpha", "--json", check=True).stdout)
    (shown,) = [c for c in status["components"] if c["name"] == "agent"]
    assert shown["state"] == "running" and "2 job(s) running" in shown["detail"], shown
    assert both_running()

    # site up on the running site: every component stays as it is
    assert {c.name: c.pid for c in manager.up("alpha").components} == after
    hold.unlink()  # the site parts end; the agent posts both
    for job in jobs:
        wait_until(lambda job=job: hub_job(hub, job.id).status == "released", 240,
                   "a held job was not posted")

    # the agent stuck (stopped, its heartbeat old): site up restarts it, and it alone
    from radflow.settings import RadflowSettings
    from radflow.site import SiteManager

    process = component("agent").process(site).process()
    wait_until(lambda: time.time() - process.create_time() > 40, 60, "the agent stays young")
    process.suspend()
    heartbeat.write_text(json.dumps({"time": time.time() - 3600, "service": "agent"}))
    impatient = SiteManager(RadflowSettings(home=manager.settings.home,
                                            start_timeout=time.time() - process.create_time()
                                            - 1))
    assert manager.status("alpha").component("agent").state == "unhealthy"
    restarted = {c.name: (c.pid, c.state) for c in impatient.up("alpha").components}
    assert restarted["agent"][0] != after["agent"] and restarted["agent"][1] == "running"
    assert {k: pid for k, (pid, _) in restarted.items() if k != "agent"} == \
        {k: v for k, v in after.items() if k != "agent"}
    assert not process.is_running() or process.status() == "zombie"


def start_case_runs(site, refs) -> list[str]:
    """Reviewed case runs of ``refs``, started together; their ids once all are suspended."""
    api = site.prefect()
    runs = [api.create_flow_run("segment-and-quantify-case/alpha",
                                {"series": ref, "site": "alpha", "review": True}).id
            for ref in refs]
    for run in runs:
        wait_until(lambda run=run: api.flow_run_state(run).get("type") == "PAUSED", 240,
                   f"run {run} did not suspend")
    return runs


def review_of(site, run_id: str) -> Review:
    with session_scope(site.catalog_url) as session:
        row = session.exec(select(Review).where(Review.flow_run_id == run_id)).one()
        session.expunge(row)
        return row


def resumptions(site, run_id: str) -> int:
    """How often the run was resumed (its "Resuming" states)."""
    states = requests.get(f"{site.prefect_api_url}/flow_run_states/", timeout=10,
                          params={"flow_run_id": run_id}, auth=site.prefect_auth()).json()
    return sum(s.get("name") == "Resuming" for s in states)


def decide(review_id: int, decision: str, crash_at: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RADFLOW, "review", "decide", str(review_id), decision, "--site",
                           "alpha"], env={**os.environ, ENV: crash_at}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_review_decision_survives_kills_and_resumes_its_run_once(site, cli, browser,
                                                                   tmp_path) -> None:
    from test_review import results
    from test_worklist import app_url, log_in

    from radflow.synth import synthesize

    made = synthesize(tmp_path, 2, seed=913, matrix=48)
    wait_settled(site)
    send(site, *[case.dicom_dir for case in made])
    wait_settled(site)
    orthanc = site.orthanc_client()
    runs = start_case_runs(site, [orthanc.series_by_uid(c.series_uid) for c in made])
    first, second = (review_of(site, run) for run in runs)

    # 1. the deciding command is killed between its commit and the resume
    assert decide(first.id, "accept", "review.after_decide").returncode == -signal.SIGKILL
    row = review_of(site, runs[0])
    assert (row.status, row.decision) == ("decided", "accept") and row.reviewer.startswith("cli:")
    # the worklist shows it decided at once; a second submit there is told who and when
    page = log_in(browser, site, "radiologist")
    assert page.locator(f"#worklist tr[data-review='{first.id}']").count() == 0
    page.goto(f"{app_url(site)}/reviews?tab=decided")
    shown = page.locator(f"#decided tr[data-review='{first.id}']").inner_text()
    assert "accept" in shown and "decided — the run" in shown  # resumes, or applied it already
    csrf = page.evaluate("() => document.querySelector('input[name=csrf]').value")
    answer = page.context.request.post(f"{app_url(site)}/reviews/{first.id}/decision",
                                       form={"csrf": csrf, "decision": "reject"})
    assert answer.status == 200 and "already decided by cli:" in answer.text()
    page.context.close()

    # 2. the deciding command is killed after Prefect took the resume, before it recorded that
    assert decide(second.id, "reject", "outbox.after_send").returncode == -signal.SIGKILL
    api = site.prefect()
    assert api.wait(runs[0], timeout=240).ok  # the review keeper resumed it
    assert api.wait(runs[1], timeout=240).ok
    wait_until(lambda: outbox.entries(site.catalog_url, subject=f"review:{second.key}")[0]
               .state == "acknowledged", 120, "the keeper did not retry the resume")

    for review, run, status, answer in ((first, runs[0], "accepted", "resumed"),
                                        (second, runs[1], "rejected", "already resumed")):
        assert resumptions(site, run) == 1
        (entry,) = outbox.entries(site.catalog_url, subject=f"review:{review.key}")
        assert entry.state == "acknowledged" and entry.answer.startswith(answer), entry
        assert [e.action for e in audit_of(site, f"review:{review.key}")] == [
            "review.requested", "review.decided"]
        (seg,) = results(site, review_of(site, run).source_series_uid, "SEG")
        assert seg.status == status and seg.status_by.startswith("cli:")
        assert review_of(site, run).applied_at is not None
    again = cli("review", "decide", str(first.id), "reject", "--site", "alpha")
    assert again.returncode == 1 and "already decided by cli:" in again.stderr
    assert verify(site.catalog_url).ok


def test_the_keeper_goes_on_past_a_bad_review(site) -> None:
    """A review past due whose run Prefect does not know, then one whose run has ended: both
    expire; the first's resume is refused for good, the second's is a no-op."""
    from radflow_review.keeper import ReviewKeeper

    api = site.prefect()  # retries a busy server (CI once got an answer without an id here)
    flow = api._request("POST", "flows/", "a test flow", json={"name": "keeper-test"}).json()["id"]
    ended = api._request("POST", "flow_runs/", "a test flow run", json={
        "flow_id": flow, "state": {"type": "COMPLETED", "name": "Completed"}}).json()["id"]
    past = utcnow() - timedelta(minutes=5)
    keys = [f"review-keeper-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with session_scope(site.catalog_url) as session:
        for key, run, due in ((keys[0], str(uuid.uuid4()), past - timedelta(minutes=1)),
                              (keys[1], ended, past)):
            session.add(Review(key=key, flow_run_id=run, source_series_uid="1.2.999",
                               assignee="role:radiologist", due_at=due))
    try:
        ReviewKeeper(site.catalog_url, site.prefect()).expire()  # (the site's keeper may too)

        def done() -> list:
            found = [outbox.entries(site.catalog_url, subject=f"review:{k}") for k in keys]
            return found if all(f and f[0].state != "pending" for f in found) else []

        (bad,), (good,) = wait_until(done, 60, "the keeper did not finish both")
        assert bad.state == "refused" and "does not know it" in bad.answer
        assert good.state == "acknowledged" and good.answer == "already resumed (the run is " \
                                                               "completed)"
        with session_scope(site.catalog_url) as session:
            rows = session.exec(select(Review).where(Review.key.in_(keys))).all()
            assert {(r.status, r.decision) for r in rows} == {("expired", "expired")}
        assert all([e.action for e in audit_of(site, f"review:{k}")] == ["review.expired"]
                   for k in keys)
    finally:
        with session_scope(site.catalog_url) as session:
            for row in session.exec(select(Review).where(Review.key.in_(keys))):
                session.delete(row)
