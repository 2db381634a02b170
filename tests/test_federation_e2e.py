"""The federated loop with real parts: a hub (federation API), the session's site 'alpha' with its
Orthanc, Prefect, worker and agent. The agent long-polls, verifies, runs the site part as a flow
run on the site's own Prefect, puts the release through the egress gate and posts it once.
The federated count equals the count computed at the site; an unapproved version is refused
with not_approved and the site's audit log records it; a version whose bundle changed is refused
with bad_signature."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import catalog_secrets, send, wait_settled
from sqlmodel import Session, col, select
from test_hub_enrolment import published

from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Series
from radflow.cohorts.definition import parse_short
from radflow.cohorts.images import is_image_series
from radflow.cohorts.query import count_series
from radflow.federation.client import join
from radflow.federation.policy import SitePolicy, policy_path, save_policy
from radflow.federation.units import count
from radflow.hub import registry, study_jobs
from radflow.hub.models import HubVersion
from radflow.hub.studies import run_study

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture()
def joined(site, manager, hub, synth_dir):
    """alpha joined to the test hub, with its agent running; left as it was afterwards."""
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    code = registry.add_site(hub["engine"], "alpha")
    join(hub["url"], "alpha", code, site.paths.root)
    manager.up("alpha")  # starts the agent, now enabled
    assert manager.status("alpha").component("agent").state == "running"
    yield site
    from radflow.site.components import component

    component("agent").process(site).stop()
    registry.revoke_site(hub["engine"], "alpha")
    shutil.rmtree(site.paths.root / "federation", ignore_errors=True)
    policy_path(site.paths.root).unlink(missing_ok=True)


def audit_since(site, seq: int) -> list[AuditEvent]:
    with session_scope(site.catalog_url) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.seq > seq)
                                 .order_by(col(AuditEvent.seq))))


def last_seq(site) -> int:
    with session_scope(site.catalog_url) as session:
        return session.exec(select(AuditEvent.seq).order_by(col(AuditEvent.seq).desc())).first() \
            or 0


def test_a_federated_count_through_the_agent(joined, hub, cli) -> None:
    site = joined
    version = published(hub)
    cohort = parse_short(["modality=CT"])
    params = {"cohort": cohort.canonical()}

    before = last_seq(site)  # nothing is approved by default
    refused = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                        ["alpha"], deadline_s=90)
    assert refused["sites"] == [{"site": "alpha", "status": "refused",
                                 "refusal": "not_approved",
                                 "policy": SitePolicy().summary()}]  # what its gate applied
    assert [e.action for e in audit_since(site, before)] == ["federation.refused"]

    # job mode manual (the default): the job waits until a data steward accepts it
    import threading
    import time

    save_policy(site.paths.root, SitePolicy(approved=[version], min_cohort=2, min_cell=2))
    manual: dict = {}
    runner = threading.Thread(target=lambda: manual.update(run_study(
        hub["engine"], hub["folder"], "federated-cohort-count", params, ["alpha"],
        deadline_s=120)))
    runner.start()
    deadline = time.monotonic() + 60
    listed: list = []
    while time.monotonic() < deadline and not listed:
        listed = json.loads(cli("site", "jobs", "list", "--site", "alpha", "--json",
                                check=True).stdout)
    assert listed and listed[0]["approved"] and not listed[0]["accepted"]
    time.sleep(3)  # the agent has seen it and waits
    assert study_jobs.study_jobs(hub["engine"], listed[0]["study"])[0].status == "queued"
    cli("site", "jobs", "accept", listed[0]["id"], "--site", "alpha", check=True)
    runner.join(150)
    assert manual["sites"][0]["status"] == "released"

    save_policy(site.paths.root, SitePolicy(approved=[version], job_mode="auto", min_cohort=2,
                                            min_cell=2))
    result = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                       ["alpha"], deadline_s=180)
    with session_scope(site.catalog_url) as session:  # the pooled answer, computed here
        matching = count_series(session, cohort)  # CT: image series all
        total = sum(is_image_series(s.modality, s.manufacturer)  # "series": image series
                    for s in session.exec(select(Series)))
    assert matching >= 2
    (alpha,) = result["sites"]
    assert alpha["status"] == "released" and alpha["release"] == {"n": total,
                                                                 "matching": matching}
    assert result["combined"]["matching"] == matching
    assert (hub["folder"] / "studies" / result["study"] / "result.png").stat().st_size > 1000
    events = audit_since(site, before)
    assert [e.action for e in events].count("federation.job_accepted") == 1
    assert events[-1].action == "federation.released"
    assert json.loads(events[-1].detail)["release"] == {"n": total, "matching": matching}
    # the release went out once: the job is done at the hub, and the agent took nothing else
    (job,) = study_jobs.study_jobs(hub["engine"], result["study"])
    assert job.status == "released" and study_jobs.queued_jobs(hub["engine"], "alpha") == []

    # one byte of the published bundle changes at the hub: the site refuses it
    with Session(hub["engine"]) as session:
        stored = session.get(HubVersion, version)
        original = stored.bundle
        stored.bundle = original.replace(b"count_image_series(session", b"count_image_series(sessioN", 1)
        session.add(stored)
        session.commit()
    try:
        tampered = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                             ["alpha"], deadline_s=90)
    finally:
        with Session(hub["engine"]) as session:
            stored = session.get(HubVersion, version)
            stored.bundle = original
            session.add(stored)
            session.commit()
    assert tampered["sites"][0]["refusal"] == "bad_signature"
    assert verify(site.catalog_url).ok


def flow_runs_of(site, study: str) -> list[dict]:
    import requests

    return requests.post(f"{site.prefect_api_url}/flow_runs/filter", auth=site.prefect_auth(),
                         timeout=10, json={"flow_runs": {"tags": {"all_": [f"study:{study}"]}}}
                         ).json()


def test_a_killed_agent_resumes_a_missing_site_is_reported_and_nothing_leaks(
        joined, hub, manager, synth_dir) -> None:
    import os
    import signal
    import threading
    import time

    from radflow.site.components import component

    site = joined
    version = published(hub)
    save_policy(site.paths.root, SitePolicy(approved=[version], job_mode="auto", min_cohort=2,
                                            min_cell=2))
    # a second site enrols but never polls: it is offline during the study
    join(hub["url"], "ghost", registry.add_site(hub["engine"], "ghost"),
         site.paths.root.parent / "ghost-site")
    params = {"cohort": parse_short(["modality=CT"]).canonical()}
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(run_study(
        hub["engine"], hub["folder"], "federated-cohort-count", params, ["alpha", "ghost"],
        deadline_s=75)))  # the ghost never answers: the study waits this long
    runner.start()
    deadline = time.monotonic() + 90
    study = None
    while time.monotonic() < deadline and study is None:  # the study's job reaches alpha
        jobs = study_jobs.queued_jobs(hub["engine"], "alpha")
        study = jobs[0]["study"] if jobs else None
        time.sleep(0.1)
    assert study is not None
    while time.monotonic() < deadline and not flow_runs_of(site, study):
        time.sleep(0.1)
    agent = component("agent").process(site)
    os.kill(agent.pid, signal.SIGKILL)  # in the middle of the job
    manager.up("alpha")  # the site supervisor starts it again
    runner.join(200)
    by_site = {s["site"]: s for s in out["sites"]}
    assert by_site["ghost"]["status"] == "missing"  # reported; alpha's result stands
    assert by_site["alpha"]["status"] == "released", by_site["alpha"]
    assert out["combined"]["sites_not_in"] == {"ghost": "missing"}
    assert len(flow_runs_of(site, study)) == 1  # the restarted agent found the same run
    with session_scope(site.catalog_url) as session:
        released = session.exec(select(AuditEvent).where(
            AuditEvent.action == "federation.released")).all()
    jobs = [json.loads(e.detail)["study"] for e in released]
    assert jobs.count(study) == 1  # posted exactly once
    from radflow.federation.steward import jobs as site_jobs

    (row,) = [j for j in site_jobs(site.catalog_url) if j.study == study]  # the agent's state
    assert (row.state, row.outcome) == ("posted", "released")
    assert row.flow_run_id == flow_runs_of(site, study)[0]["id"] and row.posted_at is not None

    # the leak test: nothing that names a patient, a study or a series reached the hub
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    secrets = set()
    for case in manifest["cases"]:
        secrets |= {str(case[k]) for k in ("patient_id", "patient_name", "study_uid",
                                          "series_uid") if case.get(k)}
    secrets |= catalog_secrets(site)
    secrets = {s for s in secrets if len(s) >= 6}
    assert len(secrets) >= 6
    stored = b"".join(p.read_bytes() for p in hub["folder"].rglob("*") if p.is_file())
    received = b"\n".join(hub["bodies"])
    assert received and stored
    for secret in secrets:
        assert secret.encode() not in stored, secret
        assert secret.encode() not in received, secret


def test_manual_release_on_the_federation_page(joined, hub, browser, shots, cli) -> None:
    """With manual_release on, a release waits after the egress gate. The data steward sees
    exactly the JSON that would leave on the worklist's Federation page and approves it there;
    a second one is declined from the CLI, and the hub learns only the code `declined`."""
    import threading
    import time

    from test_worklist import app_url, log_in

    from radflow.federation.steward import pending_releases

    site = joined
    version = published(hub)
    save_policy(site.paths.root, SitePolicy(approved=[version], job_mode="auto",
                                            manual_release=True, min_cohort=2, min_cell=2))
    params = {"cohort": parse_short(["modality=CT"]).canonical()}

    def study_in_background() -> tuple[threading.Thread, dict, dict]:
        out: dict = {}
        runner = threading.Thread(target=lambda: out.update(run_study(
            hub["engine"], hub["folder"], "federated-cohort-count", params, ["alpha"],
            deadline_s=75)))  # the ghost never answers: the study waits this long
        runner.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not pending_releases(site.catalog_url):
            time.sleep(0.2)
        (waiting,) = pending_releases(site.catalog_url)
        return runner, out, waiting

    before = last_seq(site)
    runner, out, waiting = study_in_background()
    time.sleep(2)
    assert study_jobs.study_jobs(hub["engine"], waiting["study"])[0].status == "queued"  # held
    listed = json.loads(cli("site", "releases", "list", "--site", "alpha", "--json",
                            check=True).stdout)
    assert [r["job"] for r in listed] == [waiting["job"]]

    page = log_in(browser, site, "steward", "/federation")
    card = f".release[data-job='{waiting['job']}']"
    shown = json.loads(page.text_content(f"{card} pre.release-json"))
    assert shown == waiting["release"] and set(shown) == {"n", "matching"}
    assert not page.is_visible(f"{card} pre.release-json")  # a table; the JSON behind a toggle
    counts = page.inner_text(f"{card} table[data-table='counts']")
    assert "matching" in counts and count(waiting["release"]["n"]) in counts
    assert "the denominator" in counts  # what each field is, from the installed bundle
    icon = page.request.get(f"{app_url(site)}/favicon.ico")  # the site's app has its icon
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    page.screenshot(path=str(shots / "federation-release.png"), full_page=True)
    csrf = page.get_attribute(f"{card} input[name=csrf]", "value")
    for empty in ({"hash": ""}, {}):  # an approval names the release's hash, on the web too
        refused = page.request.post(f"{app_url(site)}/federation/releases/{waiting['job']}",
                                    form={"csrf": csrf, "decision": "approve", **empty},
                                    max_redirects=0)
        assert refused.status == 422 and "hash" in refused.text()
    assert pending_releases(site.catalog_url)[0]["approved"] is False
    page.click(f"{card} button[value=approve]")
    page.wait_for_url(f"{app_url(site)}/federation")
    assert "approved" in page.inner_text(".flash")
    page.context.close()
    runner.join(120)
    (alpha,) = out["sites"]
    assert alpha["status"] == "released" and alpha["release"] == waiting["release"]
    actions = [(e.action, e.actor) for e in audit_since(site, before)]
    assert ("federation.release_pending", "radflow:agent") in actions
    approvals = [a for a in actions if a[0] == "federation.release_approved"]
    assert len(approvals) == 1 and approvals[0][1].startswith("web:")
    assert actions[-1][0] == "federation.released" and pending_releases(site.catalog_url) == []

    runner, out, waiting = study_in_background()
    forged = cli("site", "releases", "approve", waiting["job"], "--hash", "sha256:" + "0" * 64,
                 "--site", "alpha")
    assert forged.returncode == 1 and "changed since you saw it" in forged.stderr
    empty = cli("site", "releases", "approve", waiting["job"], "--hash", "", "--site", "alpha")
    assert empty.returncode == 1 and "names its hash" in empty.stderr
    shown = json.loads(cli("site", "releases", "show", waiting["job"], "--site", "alpha",
                           "--json", check=True).stdout)
    assert shown["hash"] == waiting["hash"]
    cli("site", "releases", "decline", waiting["job"], "--site", "alpha", check=True)
    runner.join(120)
    assert [{k: v for k, v in s.items() if k != "policy"} for s in out["sites"]] == \
        [{"site": "alpha", "status": "refused", "refusal": "declined"}]
    (job,) = study_jobs.study_jobs(hub["engine"], out["study"])
    assert job.release is None and job.refusal == "declined"  # nothing else reached the hub
    assert verify(site.catalog_url).ok


def test_the_agent_reports_its_site_to_the_fleet(joined, hub, manager, synth_dir) -> None:
    """The running agent tells the hub its versions and health as soon as it starts; the fleet
    table says what the site's own `site status` says, and nothing in the report names a
    patient, a study or a series."""
    import time
    from datetime import UTC, datetime
    from importlib.metadata import version as installed

    import pydicom

    from radflow import __version__
    from radflow.federation.policy import load_policy
    from radflow.hub.fleet import fleet, history
    from radflow.site.components import component

    started = component("agent").process(joined).process().create_time()  # (by `joined`)
    began = datetime.fromtimestamp(int(started), UTC)
    kept = load_policy(joined.paths.root)

    def alpha() -> dict:
        return next(r for r in fleet(hub["engine"]) if r["site"] == "alpha")

    def reported_running() -> bool:  # (a site still starting reports again within 10 s)
        row = alpha()
        return bool(row["last_heard"] and datetime.fromisoformat(row["last_heard"]) >= began
                    and row["health"]["state"] == "running")

    deadline = time.monotonic() + 60
    while not reported_running():
        assert time.monotonic() < deadline, ("alpha's agent never reported it running", alpha())
        time.sleep(0.5)
    row = alpha()
    status = manager.status("alpha")
    assert row["health"]["state"] == status.state == "running"
    assert {c["name"]: c["state"] for c in row["health"]["components"]} == {
        c.name: c.state for c in status.components}
    assert row["radflow"] == __version__ and not row["silent"]
    assert row["heard_seconds_ago"] is not None and row["heard_seconds_ago"] < 120
    plugins = {p["distribution"]: p for p in row["plugins"]}
    assert plugins["radflow-nnunet"]["version"] == installed("radflow-nnunet")
    assert plugins["radflow-nnunet"]["hash"].startswith("sha256:")
    assert "radflow" not in plugins  # (its own flows: radflow's version, above)
    assert row["policy"] == load_policy(joined.paths.root).summary(fleet=True)
    assert any(m["name"] == "radflow-abdomen-demo" for m in row["models"])
    # a changed policy is in the next report: a new row of the site's history
    before = len(history(hub["engine"], "alpha"))
    save_policy(joined.paths.root, SitePolicy(job_mode="auto", min_cohort=3))
    from radflow.federation.agent import Agent

    assert Agent(joined).report()  # (what the running agent does every minute)
    after = history(hub["engine"], "alpha")
    assert len(after) == before + 1 and after[0]["policy"]["min_cohort"] == 3
    assert Agent(joined).report() and len(history(hub["engine"], "alpha")) == before + 1
    save_policy(joined.paths.root, kept)
    # what the hub received holds no patient's name or id, no study or series UID
    posted = b"".join(b for b in hub["bodies"] if b'"health"' in b)
    assert posted
    for path in sorted(synth_dir.rglob("*.dcm"))[:5]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for value in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID,
                      ds.SeriesInstanceUID):
            assert value.encode() not in posted, value


def test_a_site_too_old_for_a_version_refuses_it_before_it_runs(joined, hub, tmp_path) -> None:
    """A version that needs a newer radflow than the site runs: the hub says so from the
    site's report before a study starts, and the site's agent, given the job anyway, refuses
    it with unsupported_version:radflow before any flow run, its audit event saying what to
    install; nothing is released."""
    import time

    from federation_checks import needy_package

    from radflow.federation.bundle import build
    from radflow.federation.manifest import sign_version
    from radflow.federation.signing import load
    from radflow.hub.fleet import fleet, readiness

    manifest, bundle = build(needy_package(tmp_path, "federated-count-next",
                                           '{radflow: ">=99"}'), publisher="test@hub")
    signed = sign_version(manifest, load(hub["folder"] / "hub.key"))
    registry.publish(hub["engine"], signed, bundle)
    site = joined
    save_policy(site.paths.root, SitePolicy(approved=[signed.hash], job_mode="auto",
                                            min_cohort=2, min_cell=2))
    deadline = time.monotonic() + 60  # (the agent reported at its start)
    while not next(r for r in fleet(hub["engine"]) if r["site"] == "alpha")["radflow"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    (row,) = readiness(hub["engine"], "federated-count-next", ["alpha"])["sites"]
    assert row["can_run"] is False
    assert [b["code"] for b in row["blocking"]] == ["unsupported_version:radflow"]

    before = last_seq(site)
    result = run_study(hub["engine"], hub["folder"], "federated-count-next",
                       {"cohort": parse_short(["modality=CT"]).canonical()}, ["alpha"],
                       deadline_s=90)
    (alpha,) = result["sites"]
    assert (alpha["status"], alpha["refusal"]) == ("refused", "unsupported_version:radflow")
    assert flow_runs_of(site, result["study"]) == []  # refused before anything ran
    (event,) = audit_since(site, before)
    detail = json.loads(event.detail)
    assert event.action == "federation.refused" and detail["release"] is None
    assert "needs radflow>=99 (has " in detail["detail"]
    assert "pip install 'radflow>=99'" in detail["detail"]
    assert verify(site.catalog_url).ok
