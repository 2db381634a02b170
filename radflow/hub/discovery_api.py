"""The hub API's routes for data discovery and access requests (:mod:`radflow.hub.discovery`):
a site posts its summary and its steward's decisions, and fetches the requests that name it;
a coordinator asks the summaries and files requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from radflow.hub.discovery import Summary


class AccessRequestBody(BaseModel):
    purpose: str = Field(max_length=2000)
    flows: list[str] = Field(max_length=50)
    sites: list[str] = Field(max_length=500)
    cohort: dict[str, Any] | None = None


class Decision(BaseModel):
    decision: Literal["approved", "declined"]
    by: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=2000)


def add_routes(app: FastAPI, engine: Engine, caller: Callable[..., str],
               coordinator: Callable[..., str], home: Any) -> None:
    """The routes, on ``app``; ``home``: the hub's folder, whose ``audit.jsonl`` records each
    summary, request and decision (none: not recorded, as in a bare API under test)."""
    from radflow.errors import RadflowError
    from radflow.hub import discovery

    def audit(actor: str, action: str, detail: dict[str, Any]) -> None:
        if home is not None:
            from radflow.hub.web import audit as append

            append(home, actor, action, detail)

    @app.post("/v1/sites/{name}/discovery")
    def summary(body: Summary, site: str = Depends(caller)) -> dict[str, str]:
        """The site's collection summary, as its policy lets it leave (``rule`` null:
        withdrawn)."""
        status = discovery.record_summary(engine, site, body)
        audit(f"site:{site}", f"discovery.{status}",
              {"rule": body.rule.model_dump() if body.rule else None})
        return {"site": site, "status": status}

    @app.get("/v1/sites/{name}/access-requests")
    def site_requests(site: str = Depends(caller)) -> list[dict[str, Any]]:
        """The access requests that name this site, with its decisions as the hub has them."""
        return [r | {"decisions": {k: v for k, v in r["decisions"].items() if k == site}}
                for r in discovery.requests(engine, site)]

    @app.post("/v1/sites/{name}/access-requests/{request_id}")
    def decide(request_id: str, body: Decision, site: str = Depends(caller)) -> dict[str, str]:
        """The site's steward's decision on an access request."""
        try:
            discovery.record_decision(engine, site, request_id, body.decision, body.by,
                                      body.reason)
        except KeyError as exc:
            raise HTTPException(404, "no such access request names this site") from exc
        audit(f"site:{site}", f"access.{body.decision}",
              {"request": request_id, "by": body.by, "reason": body.reason})
        return {"request": request_id, "site": site, "decision": body.decision}

    @app.get("/v1/discover")
    def discover(where: str = Query("", max_length=20000),
                 who: str = Depends(coordinator)) -> dict[str, Any]:
        """A cohort filter (JSON: a definition or a bare filter) answered per site and in
        total from the sites' collection summaries; none: every site's total."""
        from radflow.cohorts.definition import CohortDefinition

        try:
            node = CohortDefinition.parse(where).where if where else None
            return discovery.discover(engine, node)
        except RadflowError as exc:
            raise HTTPException(422, f"{exc.message} ({exc.fix})" if exc.fix else exc.message) \
                from exc

    @app.get("/v1/access-requests")
    def access_requests(who: str = Depends(coordinator)) -> list[dict[str, Any]]:
        return discovery.requests(engine)

    @app.post("/v1/access-requests")
    def file(body: AccessRequestBody, who: str = Depends(coordinator)) -> dict[str, Any]:
        """File an access request for the chosen sites' stewards."""
        try:
            filed = discovery.file_request(engine, body.purpose, body.flows, body.sites,
                                           body.cohort, who)
        except RadflowError as exc:
            raise HTTPException(422, f"{exc.message} ({exc.fix})" if exc.fix else exc.message) \
                from exc
        audit(who, "access.request", {"request": filed["id"], "flows": filed["flows"],
                                      "sites": filed["sites"], "cohort": filed["cohort_hash"]})
        return filed
