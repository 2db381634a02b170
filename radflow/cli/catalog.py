"""``radflow catalog``: what the site catalog holds, and keeping it in step with Orthanc."""

from __future__ import annotations

import typer

from radflow.cli.common import console, emit_rows, print_json, site_catalog_url

app = typer.Typer(help="The site catalog: metadata of everything in Orthanc.", no_args_is_help=True)
SITE = typer.Option(..., "--site", "-s", envvar="RADFLOW_SITE", help="Site name.")


@app.command()
def stats(site: str = SITE, json_out: bool = typer.Option(False, "--json")) -> None:
    """Counts by modality, body part, vendor, and series-level findings."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.store import catalog_stats

    with session_scope(site_catalog_url(site)) as session:
        data = catalog_stats(session)
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{site}[/bold]: {data['patients']} patients, {data['studies']} studies, "
                  f"{data['series']} series, {data['instances']} instances", highlight=False)
    for title, key in (("modality", "by_modality"), ("body part", "by_body_part"),
                       ("manufacturer", "by_manufacturer"), ("series status", "series_status"),
                       ("series with problem", "series_with_finding")):
        counts = data[key]
        line = ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"
        console.print(f"  {title:<20} {line}", highlight=False)


@app.command()
def findings(site: str = SITE, code: str = typer.Option(None, help="Only this finding code."),
             json_out: bool = typer.Option(False, "--json")) -> None:
    """List the findings, one line per series and code, with the reason."""
    from sqlmodel import select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Finding, Series

    with session_scope(site_catalog_url(site)) as session:
        query = select(Series.orthanc_id, Series.modality, Finding.code, Finding.severity,
                       Finding.message).join(Finding, Finding.series_pk == Series.id)
        if code:
            query = query.where(Finding.code == code)
        rows = [dict(r._mapping) for r in session.exec(query)]
    emit_rows(rows, json_out, lambda r: f"{r['orthanc_id'][:17]}  {r['modality'] or '-':<7} "
              f"{r['severity']:<8} {r['code']}: {r['message']}")


@app.command()
def wait(site: str = SITE, timeout: float = typer.Option(180, help="Seconds to wait at most.")) -> None:
    """Wait until the catalog holds exactly what Orthanc holds (exit 1 on timeout)."""
    from radflow.catalog.sync import wait_in_step
    from radflow.site import SiteManager

    ctx = SiteManager().context(site)
    with console.status("waiting for the catalog to catch up with Orthanc..."):
        info = wait_in_step(ctx.orthanc_client(), ctx.catalog_url, timeout=timeout)
    console.print(f"catalog in step with Orthanc: {info['catalog_series']} series")


@app.command()
def reconcile(site: str = SITE) -> None:
    """Request ingest of every stable series the catalog lacks (the watcher does this itself
    at start, after Orthanc comes back, and every 5 minutes)."""
    from radflow.deployments import SITE_DEPLOYMENTS, deployment_name
    from radflow.site import SiteManager
    from radflow.watcher.core import Watcher

    ctx = SiteManager().context(site)
    watcher = Watcher(ctx.orthanc_client(), ctx.catalog_url,
                      deployment_name(SITE_DEPLOYMENTS[0], site), site)
    result = watcher.reconcile()
    console.print(f"requested {result['requested']} series; removed {result['removed']} that "
                  "Orthanc no longer holds. The site's watcher submits the requests.")
