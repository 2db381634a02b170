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
from conftest import send, wait_settled
from sqlmodel import Session, col, select
from test_hub_enrolment import published

from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Series
from radflow.cohorts.definition import parse_short
from radflow.cohorts.query import count_series
from radflow.federation.client import join
from radflow.federation.policy import SitePolicy, policy_path, save_policy
from radflow.hub import registry
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


def test_a_federated_count_through_the_agent(joined, hub) -> None:
    site = joined
    version = published(hub)
    cohort = parse_short(["modality=CT"])
    params = {"cohort": cohort.canonical()}

    before = last_seq(site)  # nothing is approved by default
    refused = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                        ["alpha"], deadline_s=90)
    assert refused["sites"] == [{"site": "alpha", "status": "refused",
                                 "refusal": "not_approved"}]
    assert [e.action for e in audit_since(site, before)] == ["federation.refused"]

    save_policy(site.paths.root, SitePolicy(approved=[version], job_mode="auto", min_cohort=2,
                                            min_cell=2))
    result = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                       ["alpha"], deadline_s=180)
    with session_scope(site.catalog_url) as session:  # the pooled answer, computed here
        matching = count_series(session, cohort)
        total = len(session.exec(select(Series)).all())
    assert matching >= 2
    (alpha,) = result["sites"]
    assert alpha["status"] == "released" and alpha["release"] == {"n": total,
                                                                 "matching": matching}
    assert result["combined"]["matching"] == matching
    assert (hub["folder"] / "studies" / result["study"] / "result.png").stat().st_size > 1000
    events = audit_since(site, before)
    assert events[-1].action == "federation.released"
    assert json.loads(events[-1].detail)["release"] == {"n": total, "matching": matching}
    # the release went out once: the job is done at the hub, and the agent took nothing else
    (job,) = registry.study_jobs(hub["engine"], result["study"])
    assert job.status == "released" and registry.queued_jobs(hub["engine"], "alpha") == []

    # one byte of the published bundle changes at the hub: the site refuses it
    with Session(hub["engine"]) as session:
        stored = session.get(HubVersion, version)
        stored.bundle = stored.bundle.replace(b"count_series(session", b"count_series(sessioN", 1)
        session.add(stored)
        session.commit()
    tampered = run_study(hub["engine"], hub["folder"], "federated-cohort-count", params,
                         ["alpha"], deadline_s=90)
    assert tampered["sites"][0]["refusal"] == "bad_signature"
    assert verify(site.catalog_url).ok
