"""Is the catalog in step with Orthanc? (for `radflow catalog wait`, the demo and the tests)"""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import col, func, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import IngestRequest, Series
from radflow.errors import SiteError
from radflow.orthanc.client import OrthancClient


def compare(orthanc: OrthancClient, catalog_url: str) -> tuple[bool, dict[str, Any]]:
    """Whether the catalog holds exactly Orthanc's series (with their instance counts) and no
    ingest request is open; and the numbers behind the answer."""
    held = {k: v["Instances"] for k, v in orthanc.series_states().items()}
    with session_scope(catalog_url) as session:
        rows = dict(session.exec(select(Series.orthanc_id, Series.num_instances)).all())
        open_requests = session.exec(select(func.count()).select_from(IngestRequest).where(
            col(IngestRequest.status).in_(["pending", "batched"]))).one()
    differ = sorted(k for k in set(held) | set(rows) if held.get(k) != rows.get(k))
    info = {"orthanc_series": len(held), "catalog_series": len(rows),
            "open_requests": open_requests, "differ": differ[:5]}
    return open_requests == 0 and not differ, info


def wait_in_step(orthanc: OrthancClient, catalog_url: str, timeout: float = 180,
                 quiet_seconds: float = 3.0) -> dict[str, Any]:
    """Wait until the catalog is in step with Orthanc, and stays so for ``quiet_seconds``
    (a change may be on its way).

    Raises:
        SiteError: not in step within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    since = None
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ok, info = compare(orthanc, catalog_url)
        if ok:
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet_seconds:
                return info
        else:
            since = None
        time.sleep(0.5)
    raise SiteError(
        f"the catalog did not catch up with Orthanc within {timeout:.0f} s: {info}",
        fix="check the watcher and worker (`radflow site status`, `radflow site logs -c watcher`)",
    )
