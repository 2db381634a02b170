"""The watcher keeps the catalog exact while the watcher, Orthanc and the Prefect server are
restarted mid-stream: nothing missed, nothing ingested twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import wait_settled
from sqlmodel import func, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import IngestRequest, Instance, Series
from radflow.data.push import push
from radflow.synth import synthesize

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_restarts_mid_stream_lose_nothing_and_duplicate_nothing(orthanc, site, manager,
                                                                 tmp_path: Path) -> None:
    cases = synthesize(tmp_path, 8, seed=99, matrix=32)
    wait_settled(site)

    def send(*indices: int) -> None:
        result = push([cases[i].dicom_dir for i in indices], client=orthanc, host="127.0.0.1",
                      port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
        assert result.failed == [] and result.verified

    send(0, 1)
    manager.restart("alpha", "watcher")        # before the series are reported stable
    send(2, 3)
    manager.restart("alpha", "orthanc")        # Orthanc forgets series still settling
    send(4, 5)
    manager.restart("alpha", "prefect-server")  # ingest runs may be pending or running
    send(6, 7)
    info = wait_settled(site, timeout=240)
    assert info["catalog_series"] == 8

    expected = {c.series_uid: c.slices for c in cases}
    with session_scope(site.catalog_url) as session:
        series = {s.series_uid: s.num_instances for s in session.exec(select(Series))}
        instances = session.exec(select(func.count()).select_from(Instance)).one()
        done = Counter(r.series_orthanc_id for r in session.exec(
            select(IngestRequest).where(IngestRequest.status == "done")))
        uids = {s.orthanc_id: s.series_uid for s in session.exec(select(Series))}
    assert series == expected
    assert instances == sum(expected.values()) == orthanc.statistics()["CountInstances"]
    # every series was ingested exactly once (one completed request per series)
    assert {uids[k]: n for k, n in done.items() if k in uids} == {uid: 1 for uid in expected}
