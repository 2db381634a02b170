"""Faults during a pipeline run: the watcher, Orthanc, the Prefect server and the worker are each
killed outright (SIGKILL) while segment-and-quantify runs on the site. Each comes back by itself
(the site supervisor), the run completes, on its own or rescheduled by the supervisor after a
crash, and Orthanc and the catalog hold exactly one copy of every result."""

from __future__ import annotations

import json
import time

import psutil
import pytest
from conftest import send, wait_settled
from sqlmodel import col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult
from radflow.errors import RadflowError
from radflow.results.current import current_result_ids
from radflow.site.supervisor import read_restarts

pytestmark = [pytest.mark.services, pytest.mark.slow]


def running(site, name: str) -> int | None:
    """The component's PID once it is running and healthy, else None."""
    from radflow.site.components import component

    status = component(name).status(site)
    return status.pid if status.state == "running" else None


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except RadflowError:  # the Prefect server is away for a moment
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def finished(site, run_id: str):
    """The run once final, or the run that the supervisor started after it crashed."""
    api = site.prefect()
    run = api.flow_run(run_id)
    if run.state == "CRASHED":
        again = api.flow_runs_tagged(f"rerun-of:{run_id}")
        run = again[0] if again else run
    return run if run.state in ("COMPLETED", "FAILED", "CANCELLED") else None


def test_components_killed_during_runs_come_back_and_the_runs_complete(orthanc, site,
                                                                         synth_dir) -> None:
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    cases = json.loads((synth_dir / "manifest.json").read_text())["cases"]
    uids = [c["series_uid"] for c in cases]
    for victim in ("watcher", "orthanc", "prefect-server", "worker"):
        a_run_survives(orthanc, site, cases, uids, victim)


def a_run_survives(orthanc, site, cases: list[dict], uids: list[str], victim: str) -> None:
    """A run of the three cases (computed again), ``victim`` killed in the middle of it."""
    before = read_restarts(site.paths.run).get(victim, {}).get("count", 0)
    api = site.prefect()
    run = api.create_flow_run("segment-and-quantify/alpha", {
        "site": "alpha", "series_uids": uids, "max_parallel": 1, "force": True})
    wait_until(lambda: api.flow_run(run.id).state == "RUNNING", 120, "the run did not start")
    time.sleep(3)  # into the first case
    assert api.flow_run(run.id).state == "RUNNING", victim

    pid = running(site, victim)
    assert pid is not None
    psutil.Process(pid).kill()
    back = wait_until(lambda: (p := running(site, victim)) not in (None, pid) and p, 120,
                      f"{victim} did not come back")
    assert back != pid
    assert read_restarts(site.paths.run)[victim]["count"] == before + 1

    done = wait_until(lambda: finished(site, run.id), 600, "the run did not complete")
    assert done.state == "COMPLETED"
    if done.id != run.id:  # it crashed (the worker's flow runs may go with it): run again
        assert f"rerun-of:{run.id}" in done.tags and "attempt:1" in done.tags, done
        assert site.prefect().flow_run(run.id).state == "CRASHED"
    rows = site.prefect().table_artifact(done.id, "segment-and-quantify")
    assert sorted(r["status"] for r in rows) == ["ok"] * len(uids), [
        victim, *[(r["status"], r.get("reason")) for r in rows]]

    # exactly one current SEG and SR per series; every object in Orthanc is one result (a
    # forced run makes new ones, superseding the old), none twice
    with session_scope(site.catalog_url) as session:
        made = session.exec(select(DerivedResult).where(
            col(DerivedResult.source_series_uid).in_(uids))).all()
        current = set(session.exec(current_result_ids(uids)).all())
    assert sorted((r.source_series_uid, str(r.kind)) for r in made if r.id in current) == sorted(
        (uid, kind) for uid in uids for kind in ("SEG", "SR"))
    derived = [s for s in orthanc._get("series?expand", "listing the series")
               if s["MainDicomTags"].get("Modality") in ("SEG", "SR")]
    assert len(derived) == len(made) == len({r.orthanc_id for r in made})
    assert all(len(s["Instances"]) == 1 for s in derived)
    assert orthanc.statistics()["CountInstances"] == sum(c["slices"] for c in cases) + len(made)
    log = (site.paths.logs / "supervisor.log").read_text()
    assert f"{victim} died; starting it again" in log
