"""``radflow catalog``: what the site catalog holds, and keeping it in step with Orthanc."""

from __future__ import annotations

import typer

from radflow.cli.common import (
    JSON,
    SITE,
    console,
    emit_rows,
    print_json,
    site_catalog_url,
    site_context,
)

app = typer.Typer(help="The site catalog: metadata of everything in Orthanc.", no_args_is_help=True)


@app.command()
def stats(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Counts by modality, body part, vendor, and series-level findings."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.store import catalog_stats

    with session_scope(site_catalog_url(site)) as session:
        data = catalog_stats(session)
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{site_context(site).name}[/bold]: {data['patients']} patients, "
                  f"{data['studies']} studies, {data['series']} series, "
                  f"{data['instances']} instances", highlight=False)
    for title, key in (("modality", "by_modality"), ("body part", "by_body_part"),
                       ("manufacturer", "by_manufacturer"), ("series status", "series_status"),
                       ("series with problem", "series_with_finding")):
        counts = data[key]
        line = ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"
        console.print(f"  {title:<20} {line}", highlight=False)


@app.command()
def findings(site: str | None = SITE, code: str = typer.Option(None, help="Only this finding code."),
             json_out: bool = JSON) -> None:
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
def wait(site: str | None = SITE, timeout: float = typer.Option(180, help="Seconds to wait at most."),
         json_out: bool = JSON) -> None:
    """Wait until the catalog holds exactly what Orthanc holds (exit 1 on timeout); name the
    series cataloged in error, with why."""
    from radflow.catalog.sync import wait_in_step

    ctx = site_context(site)
    if json_out:
        print_json(wait_in_step(ctx.orthanc_client(), ctx.catalog_url, timeout=timeout))
        return
    with console.status("waiting for the catalog to catch up with Orthanc..."):
        info = wait_in_step(ctx.orthanc_client(), ctx.catalog_url, timeout=timeout)
    console.print(f"catalog in step with Orthanc: {info['catalog_series']} series", highlight=False)
    for error in info["errors"]:
        console.print(f"  [red]error[/red] {error['orthanc_id']}  {error['reason']}",
                      highlight=False)


@app.command()
def reconcile(site: str | None = SITE, json_out: bool = JSON) -> None:
    """Request ingest of every stable series the catalog lacks (the watcher does this itself
    at start, after Orthanc comes back, and every 5 minutes)."""
    from radflow.watcher.core import watcher_for

    result = watcher_for(site_context(site)).reconcile()
    if json_out:
        print_json(result)
        return
    console.print(f"requested {result['requested']} series; removed {result['removed']} that "
                  "Orthanc no longer holds. The site's watcher submits the requests.")


@app.command()
def optimize(site: str | None = SITE,
             force: bool = typer.Option(False, "--force",
                                        help="Keep a columnar copy even below RADFLOW_COLUMNS_FROM."),
             json_out: bool = JSON) -> None:
    """Bring the query planner's statistics and the catalog's columnar copy for cohort queries
    up to date now: after a bulk import (the ingest flow does this after each burst)."""
    from radflow.catalog.db import optimize as analyze
    from radflow.cohorts import columns

    url = site_catalog_url(site)
    analyze(url)
    result = columns.refresh(url, force=force)
    if json_out:
        print_json(result)
        return
    message = {
        "built": f"columnar copy built: {result.get('series')} series in {result.get('seconds')} s",
        "current": "columnar copy already current",
        "results": f"has_result part of the columnar copy made again in {result.get('seconds')} "
                   "s (results changed, series did not)",
        "small": f"{result.get('series')} series: below RADFLOW_COLUMNS_FROM, cohort queries "
                 "answer in SQL (--force keeps a copy anyway)",
        "busy": "the catalog changed while it was read; run this again when ingest is quiet",
        "unsupported": "an in-memory catalog keeps no columnar copy",
    }[result["state"]]
    console.print(message, highlight=False)
