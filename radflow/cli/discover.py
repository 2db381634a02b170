"""Data discovery and access requests on the command line (phase 13):

* ``radflow discover [--where F ...] [--cohort FILE]``: on the hub, a cohort filter answered per
  site and in total from the sites' collection summaries, with each site's rounding;
* ``radflow hub access request|list``: a coordinator's access requests and the sites'
  decisions;
* ``radflow site access list|approve|decline``: a site steward's side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from radflow.cli.common import JSON, SITE, console, print_json, report

hub_access_app = typer.Typer(help="Access requests: a study's purpose, flows and cohort, for "
                                  "the chosen sites' stewards to decide.", no_args_is_help=True)
site_access_app = typer.Typer(help="The hub's access requests naming this site: approve or "
                                   "decline them (audited).", no_args_is_help=True)


def _where(where: list[str] | None, cohort: Path | None) -> dict[str, Any] | None:
    from radflow.cohorts.definition import CohortDefinition, parse_short
    from radflow.errors import ConfigurationError

    if where and cohort:
        raise ConfigurationError("give --where or --cohort, not both",
                                 fix="put every condition in one of them")
    if cohort is not None:
        return CohortDefinition.parse(cohort.read_text()).canonical()
    return parse_short(where).canonical() if where else None


def discover(where: list[str] | None = typer.Option(
                 None, "--where", help="FIELD OP VALUE, e.g. modality=CT (repeat: all hold)"),
             cohort: Path | None = typer.Option(None, help="A cohort definition (JSON) file."),
             hub: str | None = typer.Option(None, "--hub", envvar="RADFLOW_HUB_URL",
                                            help="The hub's URL, to ask it from elsewhere "
                                                 "(with RADFLOW_HUB_TOKEN)."),
             json_out: bool = JSON) -> None:
    """How many series the fleet holds that match, per site and in total, from the sites'
    collection summaries (each site's rounding stated). On the hub, or with --hub."""
    import json

    from radflow.cli.hub import _home
    from radflow.hub.discovery import discover as answer

    definition = _where(where, cohort)
    if hub:
        from radflow.cli.study import RemoteHub

        result = RemoteHub(hub)._call("GET", "/discover", params={
            "where": json.dumps(definition) if definition else ""})
    else:
        result = answer(_home().engine(), definition["where"] if definition else None)
    if json_out:
        print_json(result)
        return
    dims = ", ".join(result["dimensions"]) or "all series"
    console.print(f"series matching ({dims}), from the sites' collection summaries:",
                  highlight=False)
    for site, a in result["sites"].items():
        said = f"{a['count']:>7}" if "count" in a else ("    yes" if a["exists"] else "     no")
        console.print(f"  {site:<24}{said}   ({a['rule']}; summary of {a['received_at']})",
                      highlight=False)
    console.print(f"  {'total':<24}{result['total']:>7}   (over {result['sites_counted']} "
                  "site(s) that give counts)", highlight=False)
    if result["silent"]:
        console.print(f"  publishing no summary: {', '.join(result['silent'])}",
                      highlight=False)


@hub_access_app.command("request")
def access_request(purpose: str = typer.Option(..., help="What the study is for."),
                   flow: list[str] = typer.Option(..., help="A flow the study runs (repeat)."),
                   sites: str = typer.Option(..., help="The sites asked, comma-separated."),
                   cohort: Path | None = typer.Option(None, help="The cohort (JSON file); "
                                                      "none: any cohort."),
                   json_out: bool = JSON) -> None:
    """File an access request: each named site's steward approves or declines it."""
    from radflow.cli.hub import _home
    from radflow.cohorts.definition import CohortDefinition
    from radflow.hub.discovery import file_request
    from radflow.hub.web import audit

    home = _home()
    who = f"cli:{_user()}"
    definition = CohortDefinition.parse(cohort.read_text()).canonical() if cohort else None
    filed = file_request(home.engine(), purpose, flow, [s.strip() for s in sites.split(",")
                                                        if s.strip()], definition, who)
    audit(home, who, "access.request", {"request": filed["id"], "flows": filed["flows"],
                                        "sites": filed["sites"], "cohort": filed["cohort_hash"]})
    report(json_out, filed, f"access request {filed['id']} filed for "
                            f"{', '.join(filed['sites'])}: their stewards see it on the "
                            "Federation page (or radflow site access list)")


@hub_access_app.command("list")
def access_list(json_out: bool = JSON) -> None:
    """The access requests, newest first, with each site's decision."""
    from radflow.cli.hub import _home
    from radflow.hub.discovery import requests

    rows = requests(_home().engine())
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['id']}  {', '.join(r['flows'])}  by {r['created_by']} "
                      f"{r['created_at']}: {r['purpose']}", highlight=False)
        for site in r["sites"]:
            d = r["decisions"].get(site)
            said = f"{d['decision']} by {d['by']} {d['at']}" + (f": {d['reason']}" if
                                                                 d["reason"] else "") \
                if d else "undecided"
            console.print(f"    {site:<24}{said}", highlight=False)
    if not rows:
        console.print("no access requests (radflow hub access request ...)")


def _user() -> str:
    import getpass

    return getpass.getuser()


@site_access_app.command("list")
def site_access_list(site: str | None = SITE, json_out: bool = JSON) -> None:
    """The access requests naming this site (fetched from the hub now when it answers), with
    this site's decisions."""
    from radflow.cli.common import site_context
    from radflow.federation import access

    ctx = site_context(site)
    _fetch(ctx)
    rows = access.listing(ctx.paths.root, ctx.catalog_url)
    if json_out:
        print_json(rows)
        return
    for r in rows:
        d = r["decided"]
        console.print(f"{r['id']}  {d['decision'] if d else 'undecided'}  flows "
                      f"{', '.join(r['flows'])}  cohort {r['cohort_hash'] or 'any'}  by "
                      f"{r['created_by']}: {r['purpose']}", highlight=False)
    if not rows:
        console.print("no access request names this site")


def _fetch(ctx: Any) -> None:
    from radflow.errors import RadflowError
    from radflow.federation import access
    from radflow.federation.client import HubClient

    try:
        access.refresh(ctx.paths.root, HubClient(ctx.paths.root))
    except (RadflowError, OSError) as exc:
        console.print(f"(the hub was not asked: {getattr(exc, 'message', exc)}; the requests "
                      "fetched last are shown)", highlight=False)


def _decide(site: str | None, request_id: str, approve: bool, reason: str,
            json_out: bool) -> None:
    from radflow.cli.common import site_context
    from radflow.federation import access

    ctx = site_context(site)
    if not any(r["id"] == request_id for r in access.known(ctx.paths.root)):
        _fetch(ctx)
    done = access.decide(ctx.paths.root, ctx.catalog_url, request_id, approve,
                         f"cli:{_user()}", reason)
    report(json_out, done, f"access request {request_id}: {done['decision']} (audited; the "
                           "agent tells the hub)")


@site_access_app.command("approve")
def site_access_approve(request_id: str, site: str | None = SITE,
                        reason: str = typer.Option("", help="A note for the coordinator."),
                        json_out: bool = JSON) -> None:
    """Approve an access request: studies of its flows (on its cohort) may run here."""
    _decide(site, request_id, True, reason, json_out)


@site_access_app.command("decline")
def site_access_decline(request_id: str, reason: str = typer.Option(..., help="Why."),
                        site: str | None = SITE, json_out: bool = JSON) -> None:
    """Decline an access request (or withdraw an approval): its studies do not run here."""
    _decide(site, request_id, False, reason, json_out)
