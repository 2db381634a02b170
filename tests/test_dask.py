"""The cohort fan-out on Dask (prefect-dask): `radflow pipeline run --isolation dask` on the site's
worker starts a LocalCluster of worker processes, runs each case there as a subflow, and gives
the same results as the thread runner: one SEG and one SR per series, in Orthanc and the
catalog."""

from __future__ import annotations

import json

import pytest
from conftest import send, wait_settled
from sqlmodel import col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_the_cohort_fan_out_runs_on_a_dask_cluster(orthanc, site, synth_dir, cli) -> None:
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    uids = [c["series_uid"] for c in
            json.loads((synth_dir / "manifest.json").read_text())["cases"]][:2]
    args = ["pipeline", "run", "--site", "alpha", "--isolation", "dask", "--max-parallel", "2",
            "--json", *[x for uid in uids for x in ("--series", uid)]]
    first = json.loads(cli(*args, check=True).stdout)
    assert (first["ok"], first["failed"], first["state"]) == (2, 0, "COMPLETED"), first

    with session_scope(site.catalog_url) as session:
        made = session.exec(select(DerivedResult).where(
            col(DerivedResult.source_series_uid).in_(uids))).all()
    assert sorted((r.source_series_uid, str(r.kind)) for r in made) == sorted(
        (uid, kind) for uid in uids for kind in ("SEG", "SR"))
    instances = orthanc.statistics()["CountInstances"]
    images = sum(c["slices"] for c in
                 json.loads((synth_dir / "manifest.json").read_text())["cases"])
    assert instances == images + 4  # one SEG and one SR per series

    # the cases ran in a subflow whose task runner is Dask's, a case task per series
    dask_runs = prefect_post(site, "flow_runs/filter",
                             {"flows": {"name": {"any_": ["cases-on-dask"]}}})
    assert len(dask_runs) == 1 and dask_runs[0]["state_type"] == "COMPLETED"
    for run in dask_runs:
        tasks = prefect_post(site, "task_runs/filter",
                             {"flow_runs": {"id": {"any_": [run["id"]]}}})
        assert len([t for t in tasks if t["name"].startswith("case-")]) == 2


def prefect_post(site, path: str, body: dict) -> list[dict]:
    import requests

    auth = tuple(site.secrets.prefect_auth_string.get_secret_value().split(":", 1))
    answer = requests.post(f"{site.prefect_api_url}/{path}", json=body, auth=auth, timeout=30)
    answer.raise_for_status()
    return answer.json()
