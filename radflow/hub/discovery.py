"""The hub's side of data discovery and access requests (phase 13).

* **Summaries.** Each site's agent posts its collection summary (what its policy lets leave:
  :mod:`radflow.federation.discovery`); the hub keeps the newest per site, and answers a
  cohort-language query from them per site and in total (`radflow discover`, the web app's
  Discover page, ``GET /v1/discover``). A site that turns discovery off withdraws its summary.
* **Access requests.** A coordinator files a request (purpose, flows, optionally a cohort) for
  chosen sites (`radflow hub access request`, the Discover page, ``POST /v1/access-requests``).
  Each site's agent fetches the requests that name it; its steward approves or declines one
  (`radflow site access`, the site's Federation page) and the agent reports the decision. A
  site whose policy says ``require_access_request`` runs a study only under a request its
  steward approved, for that flow and that cohort: the site refuses any other job itself
  (``no_access_request``), and the hub does not start a study there
  (:func:`radflow.hub.fleet.readiness`).

Nothing a site posts is trusted: a summary's tables and cells are bounded and typed.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from radflow.catalog.models.base import as_utc, utcnow
from radflow.errors import ConfigurationError
from radflow.hub.models import HubAccessDecision, HubAccessRequest, HubDiscovery

Text64 = Annotated[str, StringConstraints(max_length=64)]
Cell = Annotated[list[Text64 | Annotated[int, Field(ge=0, le=10**9)] | bool],
                 Field(min_length=2, max_length=3)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(_Strict):
    granularity: Literal["boolean", "count"]
    min_count: int = Field(ge=1, le=10**6)
    round_to: int = Field(ge=1, le=10**6)


class Summary(_Strict):
    """A site's collection summary as it posts it (``rule`` None: discovery is off, withdraw)."""

    rule: Rule | None = None
    totals: dict[Text64, Annotated[int, Field(ge=0, le=10**9)] | bool] = Field(
        default_factory=dict, max_length=10)
    tables: dict[Annotated[str, StringConstraints(max_length=40)],
                 Annotated[list[Cell], Field(max_length=5000)]] = Field(
        default_factory=dict, max_length=40)


def record_summary(engine: Engine, site: str, summary: Summary) -> str:
    """Keep the site's newest summary (or remove it: ``withdrawn``)."""
    with Session(engine) as session:
        row = session.get(HubDiscovery, site)
        if summary.rule is None:
            if row is not None:
                session.delete(row)
                session.commit()
            return "withdrawn"
        row = row or HubDiscovery(site=site, summary="{}")
        row.summary, row.received_at = summary.model_dump_json(), utcnow()
        session.add(row)
        session.commit()
    return "recorded"


def summaries(engine: Engine) -> dict[str, dict[str, Any]]:
    """Each publishing site's newest summary, with when it came (``received_at``)."""
    with Session(engine) as session:
        rows = session.exec(select(HubDiscovery).order_by(col(HubDiscovery.site))).all()
    return {r.site: json.loads(r.summary) | {"received_at": as_utc(r.received_at).isoformat(
        timespec="seconds")} for r in rows}


def discover(engine: Engine, where: dict[str, Any] | None) -> dict[str, Any]:
    """A cohort filter's answer from the summaries, per site and in total; the sites that
    publish none are named apart.

    Raises:
        NotAnswerable: a query the summaries cannot answer (the fix says what can be).
    """
    from radflow.federation.discovery import answer
    from radflow.hub.registry import sites

    found = summaries(engine)
    result = answer(found, where or {"all": []})
    for site, summary in found.items():
        result["sites"][site]["received_at"] = summary["received_at"]
    result["silent"] = sorted(s.name for s in sites(engine)
                              if s.status == "enrolled" and s.name not in found)
    return result


# -- access requests ------------------------------------------------------------------------
def file_request(engine: Engine, purpose: str, flows: list[str], sites: list[str],
                 cohort: dict[str, Any] | None, by: str) -> dict[str, Any]:
    """File an access request.

    Raises:
        ConfigurationError: no purpose, no flow, an unknown flow, or a site not enrolled.
    """
    from radflow.cohorts.definition import CohortDefinition
    from radflow.hub.registry import sites as enrolled_sites
    from radflow.hub.registry import versions

    purpose = " ".join(purpose.split())
    if not 10 <= len(purpose) <= 2000:
        raise ConfigurationError("an access request states its purpose (10 to 2000 characters)",
                                 fix="say what the study is for: the stewards decide on it")
    published = {v.name for v in versions(engine)}
    unknown = sorted(set(flows) - published)
    if not flows or unknown:
        raise ConfigurationError(f"unknown flow(s) {', '.join(unknown)}" if unknown else
                                 "an access request names at least one flow",
                                 fix=f"one of: {', '.join(sorted(published)) or '(none)'}")
    known = {s.name for s in enrolled_sites(engine) if s.status == "enrolled"}
    if not sites or set(sites) - known:
        raise ConfigurationError(f"not enrolled: {', '.join(sorted(set(sites) - known))}"
                                 if sites else "an access request names its sites",
                                 fix=f"choose among: {', '.join(sorted(known)) or '(none)'}")
    definition = CohortDefinition.parse(cohort) if cohort else None
    row = HubAccessRequest(
        id="ar-" + secrets.token_hex(4), purpose=purpose, flows=json.dumps(sorted(set(flows))),
        sites=json.dumps(sorted(set(sites))), created_by=by,
        cohort=definition.canonical_json() if definition else None,
        cohort_hash=definition.content_hash if definition else None)
    with Session(engine) as session:
        session.add(row)
        session.commit()
        session.refresh(row)
        return _request_row(row, {})


def _request_row(row: HubAccessRequest, decisions: dict[str, HubAccessDecision]
                 ) -> dict[str, Any]:
    from radflow.cohorts.definition import in_words

    return {"cohort_text": in_words(json.loads(row.cohort)["where"]) if row.cohort
            else "any cohort",
            "id": row.id, "purpose": row.purpose, "flows": json.loads(row.flows),
            "cohort": json.loads(row.cohort) if row.cohort else None,
            "cohort_hash": row.cohort_hash, "sites": json.loads(row.sites),
            "created_by": row.created_by,
            "created_at": as_utc(row.created_at).isoformat(timespec="seconds"),
            "decisions": {site: {"decision": d.decision, "by": d.decided_by,
                                 "reason": d.reason,
                                 "at": as_utc(d.decided_at).isoformat(timespec="seconds")}
                          for site, d in decisions.items()}}


def requests(engine: Engine, site: str | None = None) -> list[dict[str, Any]]:
    """The access requests (newest first) with each site's decision; ``site``: those naming it."""
    with Session(engine) as session:
        rows = session.exec(select(HubAccessRequest)
                            .order_by(col(HubAccessRequest.created_at).desc())).all()
        decided: dict[str, dict[str, HubAccessDecision]] = {}
        for d in session.exec(select(HubAccessDecision)).all():
            decided.setdefault(d.request_id, {})[d.site] = d
    out = [_request_row(r, decided.get(r.id, {})) for r in rows]
    return [r for r in out if site is None or site in r["sites"]]


def record_decision(engine: Engine, site: str, request_id: str, decision: str, by: str,
                    reason: str) -> None:
    """A site's steward's decision, as the site reports it (a later one replaces it).

    Raises:
        KeyError: no such request names this site.
    """
    with Session(engine) as session:
        row = session.get(HubAccessRequest, request_id)
        if row is None or site not in json.loads(row.sites):
            raise KeyError(request_id)
        found = session.get(HubAccessDecision, (request_id, site)) or HubAccessDecision(
            request_id=request_id, site=site, decision=decision)
        found.decision, found.decided_by, found.reason = decision, by[:200], reason[:2000]
        found.decided_at = utcnow()
        session.add(found)
        session.commit()


def permits(request: dict[str, Any], site: str, flow: str, cohort_hash: str | None) -> bool:
    """Whether an access request, as approved by ``site``, covers a study of ``flow`` on a
    cohort of that hash (a request that names no cohort covers any)."""
    decision = request.get("decisions", {}).get(site) or {}
    return (decision.get("decision") == "approved" and flow in request["flows"]
            and request.get("cohort_hash") in (None, cohort_hash))


def approved_for(engine: Engine, site: str, flow: str, cohort_hash: str | None) -> bool:
    return any(permits(r, site, flow, cohort_hash) for r in requests(engine, site))
