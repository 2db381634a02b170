"""Scheduled studies: a study that runs by itself (every Monday at 02:00, say) is a schedule of
the hub's Prefect deployment ``federated-study/NAME``, with the study's parameters as the
schedule's own parameters. Prefect's scheduler starts each run; each run is an ordinary study
(its own id, its page, its result), started by ``schedule:<slug> (<who made it>)``.

    made = create(home, "federated-cohort-count", "0 2 * * 1", {"cohort": {...}}, None, 600,
                  "cli:anna")
    rows(home)                     # each schedule: flow, cron, active, next run, last studies
    set_active(home, made["slug"], False); delete(home, made["slug"])

The schedules live in the hub's Prefect database (with its flow runs); re-applying the
deployments (`radflow hub up`, `radflow publish`) keeps them (:func:`keep_schedules`).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from radflow.errors import ConfigurationError
from radflow.hub import study_jobs

PREFIX = "radflow-"  # the slug of every schedule made here
DEPLOYMENT = "federated-study/{}"


def _schedule(cron: str | None, every: float | None, timezone: str) -> dict[str, Any]:
    if (cron is None) == (every is None):
        raise ConfigurationError("a schedule has a --cron or an --every, and only one",
                                 fix="e.g. --cron '0 2 * * 1' (Mondays at 02:00)")
    if every is not None:
        if not 60 <= every <= 366 * 86400:
            raise ConfigurationError("--every is between 1 minute and a year",
                                     fix="e.g. --every 1d")
        return {"interval": every, "timezone": timezone}
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise ConfigurationError(f"--cron {cron!r} (timezone {timezone}) is not a schedule: "
                                 f"{str(exc).splitlines()[-1].strip()}",
                                 fix="five fields: minute hour day month weekday, e.g. "
                                     "'0 2 * * 1'") from None
    return {"cron": cron, "timezone": timezone}


def create(home: Any, name: str, cron: str | None, params: dict[str, Any],
           sites: list[str] | None, deadline_s: float, created_by: str,
           every: float | None = None, timezone: str = "UTC") -> dict[str, Any]:
    """Add a schedule to ``federated-study/NAME``; returns its row (see :func:`rows`).

    Raises:
        ConfigurationError: no such flow, an unknown site, parameters the flow refuses, or a
            schedule that does not parse.
    """
    engine = home.engine()
    study_jobs.check_study(engine, name, sites)
    study_jobs.check_params(engine, name, params)
    schedule = _schedule(cron, every, timezone)
    slug = PREFIX + secrets.token_hex(4)
    api = home.prefect()
    deployment = api.deployment_id(DEPLOYMENT.format(name))
    api._request("POST", f"deployments/{deployment}/schedules", "adding the schedule", json=[{
        "schedule": schedule, "active": True, "slug": slug,
        "parameters": {"name": name, "params": params, "sites": sites or None,
                       "deadline_s": deadline_s,
                       "started_by": f"schedule:{slug} ({created_by})"}}])
    return _find(home, slug)


def _deployments(home: Any) -> list[dict[str, Any]]:
    api = home.prefect()
    return api._request("POST", "deployments/filter", "reading the hub's deployments", json={
        "flows": {"name": {"any_": ["federated-study"]}}, "limit": 200}).json()


def rows(home: Any, last: int = 5) -> list[dict[str, Any]]:
    """Every schedule made here: slug, flow, cron (or interval), active, parameters, who made
    it, the next run's time, and its last studies (newest first)."""
    api = home.prefect()
    studies = study_jobs.studies(home.engine())
    out = []
    for deployment in _deployments(home):
        for item in deployment.get("schedules") or []:
            slug = item.get("slug") or ""
            if not slug.startswith(PREFIX):
                continue
            params = item.get("parameters") or {}
            schedule = item["schedule"]
            upcoming = api._request("POST", "flow_runs/filter", "reading the next run", json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}},
                              "tags": {"all_": ["auto-scheduled"]}},
                "sort": "EXPECTED_START_TIME_ASC", "limit": 50}).json()
            mine = [r for r in upcoming
                    if (r.get("parameters") or {}).get("started_by") == params.get("started_by")]
            started = f"schedule:{slug} "
            out.append({
                "slug": slug, "id": item["id"], "flow": deployment["name"],
                "cron": schedule.get("cron"), "every_s": schedule.get("interval"),
                "timezone": schedule.get("timezone"), "active": item["active"],
                "params": params.get("params") or {}, "sites": params.get("sites"),
                "deadline_s": params.get("deadline_s"),
                "created_by": _who(params.get("started_by", "")),
                "next_run": mine[0]["expected_start_time"] if mine and item["active"] else None,
                "last_studies": [{"study": s.id, "created_at": s.created_at.isoformat()}
                                 for s in studies if (s.started_by or "").startswith(started)
                                 ][:last]})
    return sorted(out, key=lambda r: (r["flow"], r["slug"]))


def _who(started_by: str) -> str:
    found = re.search(r"\((.*)\)$", started_by)
    return found.group(1) if found else ""


def _find(home: Any, slug: str) -> dict[str, Any]:
    for row in rows(home):
        if row["slug"] == slug:
            return row
    raise ConfigurationError(f"there is no schedule {slug!r} on this hub",
                             fix="see radflow study schedule list")


def _located(home: Any, slug: str) -> tuple[str, dict[str, Any]]:
    """The deployment id and the schedule as Prefect holds it."""
    if slug.startswith(PREFIX):
        for deployment in _deployments(home):
            for item in deployment.get("schedules") or []:
                if item.get("slug") == slug:
                    return deployment["id"], item
    raise ConfigurationError(f"there is no schedule {slug!r} on this hub",
                             fix="see radflow study schedule list")


def set_active(home: Any, slug: str, active: bool) -> dict[str, Any]:
    """Pause (its scheduled runs are removed) or resume a schedule. (Its parameters are sent
    again: Prefect's update of a schedule resets those it is not given.)"""
    deployment, item = _located(home, slug)
    home.prefect()._request("PATCH", f"deployments/{deployment}/schedules/{item['id']}",
                            "pausing or resuming the schedule", ok=(200, 204),
                            json={"active": active, "parameters": item.get("parameters") or {}})
    return _find(home, slug)


def delete(home: Any, slug: str) -> dict[str, Any]:
    """Remove a schedule (its past studies stay)."""
    row = _find(home, slug)
    deployment, item = _located(home, slug)
    home.prefect()._request("DELETE", f"deployments/{deployment}/schedules/{item['id']}",
                            "deleting the schedule", ok=(200, 204))
    return row


def existing(home: Any) -> dict[str, list[dict[str, Any]]]:
    """The schedules made here, per deployment name, as Prefect takes them back."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for deployment in _deployments(home):
        for item in deployment.get("schedules") or []:
            if (item.get("slug") or "").startswith(PREFIX):
                kept.setdefault(deployment["name"], []).append({
                    "schedule": item["schedule"], "active": item["active"],
                    "slug": item["slug"], "parameters": item.get("parameters") or {}})
    return kept


def keep_schedules(home: Any, before: dict[str, list[dict[str, Any]]]) -> None:
    """After the deployments were applied again: put back any schedule that went with it."""
    api = home.prefect()
    now = {d["name"]: {s.get("slug") for s in d.get("schedules") or []}
           for d in _deployments(home)}
    for name, items in before.items():
        missing = [i for i in items if i["slug"] not in now.get(name, set())]
        if missing:
            deployment = api.deployment_id(DEPLOYMENT.format(name))
            api._request("POST", f"deployments/{deployment}/schedules",
                         "putting the schedules back", json=missing)
