"""``radflow pipeline``: run the site's segment-and-quantify flow, export features."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from radflow.cli.common import console, print_json

app = typer.Typer(help="Segmentation and radiomics over a cohort.", no_args_is_help=True)
SITE = typer.Option(..., "--site", "-s", envvar="RADFLOW_SITE", help="Site name.")


@app.command()
def run(
    site: str = SITE,
    cohort: str | None = typer.Option(None, help="A saved cohort."),
    series: list[str] | None = typer.Option(None, "--series", help="SeriesInstanceUID (repeatable)."),
    model: str = typer.Option("radflow-abdomen-demo", help="nnU-Net model."),
    params: str = typer.Option("default", help="Radiomics parameters block."),
    force: bool = typer.Option(False, help="Compute again even if done before."),
    timeout: float = typer.Option(1800, help="Seconds to wait for the run."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Run segment-and-quantify on the site's worker and wait for it (the run shows in the UI)."""
    from prefect.deployments import run_deployment

    from radflow.site import SiteManager
    from radflow.site.artifacts import run_table
    from radflow.site.registration import site_prefect

    ctx = SiteManager().context(site)
    parameters = {"cohort": cohort, "series_uids": series or None, "model": model,
                  "params": params, "site": site, "force": force}
    with site_prefect(ctx), console.status("segment-and-quantify running on the site's worker..."):
        run_ = run_deployment(f"segment-and-quantify/{site}", parameters=parameters, timeout=timeout)
    rows = run_table(ctx, str(run_.id), "segment-and-quantify")
    summary = {"flow_run": str(run_.id), "state": run_.state.type.value,
               "ui": f"{ctx.prefect_url}/runs/flow-run/{run_.id}", "cases": len(rows),
               "ok": sum(r["status"] == "ok" for r in rows),
               "failed": sum(r["status"] != "ok" for r in rows), "rows": rows}
    if json_out:
        print_json(summary)
    else:
        console.print(f"flow run {summary['state'].lower()}: {summary['ui']}", highlight=False)
        for row in summary["rows"]:
            extra = ", ".join(f"{k} {v}" for k, v in row.items()
                              if k not in ("series", "series_uid", "status", "reason"))
            console.print(f"  {row['status']:<7} {row['series']:<30} {row['reason'] or extra}",
                          highlight=False)
    if not run_.state.is_completed():
        raise typer.Exit(1)


@app.command()
def features(
    site: str = SITE,
    out: Path = typer.Option(..., "--out", help="CSV or Parquet file (by extension)."),
    cohort: str | None = typer.Option(None, help="Only the series of this cohort."),
) -> None:
    """Export the catalog's feature table (one row per series, segment and feature)."""
    from radflow.catalog.db import session_scope
    from radflow.catalog.results import feature_table
    from radflow.cli.common import site_catalog_url
    from radflow.cohorts import load_cohort, select_series

    with session_scope(site_catalog_url(site)) as session:
        uids = None
        if cohort:
            definition, _ = load_cohort(session, cohort)
            uids = [s.series_uid for s in select_series(session, definition)]
        table = feature_table(session, uids)
    if out.suffix == ".parquet":
        table.to_parquet(out)
    else:
        table.to_csv(out)
    console.print(f"wrote {len(table.rows)} feature values to {out}", highlight=False)
