"""Read what a flow run published (its table artifacts) from the site's Prefect server."""

from __future__ import annotations

import json
from typing import Any

import requests

from radflow.errors import SiteError
from radflow.site.components import SiteContext


def run_table(ctx: SiteContext, flow_run_id: str, key: str) -> list[dict[str, Any]]:
    """The rows of the table artifact ``key`` of a flow run (the latest version)."""
    answer = requests.post(f"{ctx.prefect_api_url}/artifacts/filter", auth=ctx.prefect_auth(),
                           json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]},
                                               "key": {"any_": [key]}},
                                 "sort": "CREATED_DESC", "limit": 1}, timeout=30)
    if answer.status_code != 200:
        raise SiteError(f"reading the artifacts of flow run {flow_run_id} failed: HTTP "
                        f"{answer.status_code}", fix="check the site's Prefect server")
    found = answer.json()
    if not found:
        return []
    data = found[0]["data"]
    return json.loads(data) if isinstance(data, str) else data
