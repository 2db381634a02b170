"""A site's side of access requests (phase 13): the requests its hub says name it, and its
steward's decisions on them.

* The agent fetches the requests that name the site and keeps them in
  ``sites/NAME/federation/access-requests.json`` (:func:`refresh`), where the Federation page
  and `radflow site access` read them.
* A steward's decision is an audit event (``access.approved`` or ``access.declined``, subject
  ``access_request:<id>``, the request as decided in its detail) and an outbox entry that
  tells the hub, in one transaction (:func:`decide`): the audit log *is* the record, so no
  decision can be made without its event. A later decision on the same request replaces it (a
  steward may withdraw an approval).
* With the site policy ``require_access_request``, the agent runs a job only where an approved
  request covers the job's flow and cohort (:func:`permits`); else it refuses the job with
  ``no_access_request``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from radflow.errors import ConfigurationError

ACTIONS = ("access.approved", "access.declined")
CACHE = "access-requests.json"


def cache_path(site_root: Path) -> Path:
    return site_root / "federation" / CACHE


def cohort_hash(params: dict[str, Any] | None) -> str | None:
    """The content hash of a job's or a study's cohort (its ``cohort`` parameter)."""
    from radflow.cohorts.definition import CohortDefinition
    from radflow.errors import RadflowError

    cohort = (params or {}).get("cohort")
    if not isinstance(cohort, dict):
        return None
    try:
        return CohortDefinition.parse(cohort).content_hash
    except (RadflowError, ValueError):
        return None


def refresh(site_root: Path, client: Any) -> list[dict[str, Any]]:
    """Fetch the requests that name this site from its hub and keep them (the hub's copy of
    the site's decisions is dropped: the site's own audit log is what counts)."""
    fetched = client.get_json("/access-requests")
    kept = [{k: v for k, v in r.items() if k != "decisions"} for r in fetched][:500]
    path = cache_path(site_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=2))
    tmp.replace(path)
    return kept


def known(site_root: Path) -> list[dict[str, Any]]:
    """The requests fetched last (none before the first fetch)."""
    try:
        return json.loads(cache_path(site_root).read_text())
    except (OSError, ValueError):
        return []


def decisions(catalog_url: str) -> dict[str, dict[str, Any]]:
    """Each decided request's newest decision: request id -> {decision, by, at, reason,
    request}."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import AuditEvent

    out: dict[str, dict[str, Any]] = {}
    with session_scope(catalog_url) as session:
        for event in session.exec(select(AuditEvent).where(col(AuditEvent.action).in_(ACTIONS))
                                  .order_by(col(AuditEvent.seq))):
            detail = json.loads(event.detail)
            out[event.subject.removeprefix("access_request:")] = {
                "decision": event.action.removeprefix("access."), "by": event.actor,
                "at": event.time.isoformat(timespec="seconds"),
                "reason": detail.get("reason", ""), "request": detail.get("request", {})}
    return out


def listing(site_root: Path, catalog_url: str) -> list[dict[str, Any]]:
    """The known requests with this site's decision on each (undecided first)."""
    from radflow.cohorts.definition import in_words

    decided = decisions(catalog_url)
    rows = [r | {"decided": decided.get(r["id"]), "cohort_text": in_words(
        (r.get("cohort") or {}).get("where")) if r.get("cohort") else "any cohort"}
        for r in known(site_root)]
    return sorted(rows, key=lambda r: (r["decided"] is not None, r.get("created_at", "")),
                  reverse=False)


def decide(site_root: Path, catalog_url: str, request_id: str, approve: bool, actor: str,
           reason: str = "") -> dict[str, Any]:
    """Record the steward's decision (audit event and the hub's outbox entry, together).

    Raises:
        ConfigurationError: no known request has that id (fetch them first), or a decline
            without a reason.
    """
    from radflow import outbox

    request = next((r for r in known(site_root) if r["id"] == request_id), None)
    if request is None:
        raise ConfigurationError(f"no access request {request_id!r} is known at this site",
                                 fix="radflow site access list (it fetches them from the hub)")
    if not approve and not reason.strip():
        raise ConfigurationError("a decline says why", fix="give a reason (--reason TEXT)")
    decision = "approved" if approve else "declined"

    def work(session: Any) -> None:
        outbox.audit(session, actor=actor, action=f"access.{decision}",
                     subject=f"access_request:{request_id}",
                     detail={"request": request, "reason": reason.strip()})
        outbox.add(session, "hub.access", f"access_request:{request_id}", request_id,
                   {"decision": decision, "by": actor, "reason": reason.strip()})

    outbox.atomically(catalog_url, work)
    return {"request": request_id, "decision": decision}


def permits(catalog_url: str, flow: str, cohort: str | None) -> dict[str, Any] | None:
    """The approved request (as approved) that covers a job of ``flow`` on a cohort of hash
    ``cohort`` (a request naming no cohort covers any); None where none does."""
    for request_id, found in sorted(decisions(catalog_url).items()):
        request = found["request"]
        if found["decision"] == "approved" and flow in request.get("flows", []) \
                and request.get("cohort_hash") in (None, cohort):
            return {"id": request_id, **request}
    return None


def send_decision(client: Any, entry: Any) -> str:
    """Tell the hub one decision (an outbox entry of kind ``hub.access``).

    Raises:
        Undeliverable: the hub knows no such request naming this site.
        HubUnavailable, SiteError: retried.
    """
    from radflow import outbox
    from radflow.errors import SiteError
    from radflow.federation.client import BUSY

    answer = client.post(f"/access-requests/{entry.target}", outbox.payload(entry))
    if answer.status_code == 200:
        return "recorded"
    if answer.status_code in BUSY:
        raise client.unavailable(answer, "an access decision")
    if answer.status_code == 404:
        raise outbox.Undeliverable(f"the hub knows no access request {entry.target} for this "
                                   "site", fix="see the hub's log")
    raise SiteError(f"the hub answered HTTP {answer.status_code} to an access decision",
                    fix="it is posted again; see the hub's log")
