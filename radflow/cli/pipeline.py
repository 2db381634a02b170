"""``radflow pipeline``: run the site's segment-and-quantify flow, export features."""

from __future__ import annotations

from pathlib import Path

import typer

from radflow.cli.common import (
    JSON,
    SITE,
    console,
    print_json,
    report,
    site_catalog_url,
    site_context,
)

app = typer.Typer(help="Segmentation and radiomics over a cohort.", no_args_is_help=True)


@app.command()
def run(
    site: str | None = SITE,
    cohort: str | None = typer.Option(None, help="A saved cohort."),
    series: list[str] | None = typer.Option(None, "--series", help="SeriesInstanceUID (repeatable)."),
    model: str = typer.Option("radflow-abdomen-demo", help="Segmentation model."),
    params: str = typer.Option("default", help="Radiomics parameters block."),
    force: bool = typer.Option(False, help="Compute again even if done before: new objects "
                                           "(new UIDs) that supersede the old ones, which stay "
                                           "in Orthanc; the new results start as draft."),
    review: bool = typer.Option(False, help="Have a clinician review each SEG (the cases wait "
                                            "on the worklist; the run ends without waiting)."),
    max_parallel: int = typer.Option(2, help="Cases in flight at once."),
    isolation: str = typer.Option("inline", help="inline (one process, model shared), runs "
                                                 "(one flow run per case) or dask (a Dask "
                                                 "cluster)."),
    dask_address: str | None = typer.Option(
        None, help="With --isolation dask: a Dask scheduler, tcp://HOST:8786 (default: a "
                   "LocalCluster of --max-parallel processes on the worker's machine)."),
    timeout: float = typer.Option(1800, help="Seconds to wait for the run."),
    json_out: bool = JSON,
) -> None:
    """Run segment-and-quantify on the site's worker and wait for it (the run shows in the UI).
    Exit status 1 if the run or a case failed."""
    ctx = site_context(site)
    api = ctx.prefect()
    parameters = {"cohort": cohort, "series_uids": series or None, "model": model,
                  "params": params, "site": ctx.name, "force": force,
                  "max_parallel": max_parallel, "isolation": isolation, "review": review,
                  "dask_address": dask_address}
    started = api.create_flow_run(f"segment-and-quantify/{ctx.name}", parameters,
                                  tags=("radflow", "cli"))
    if json_out:
        finished = api.wait(started.id, timeout)
    else:
        console.print(f"flow run {started.name}: {api.flow_run_ui(started.id)}", highlight=False)
        with console.status("segment-and-quantify running on the site's worker..."):
            finished = api.wait(started.id, timeout)
    rows = api.table_artifact(finished.id, "segment-and-quantify")
    summary = {"flow_run": finished.id, "state": finished.state, "message": finished.message,
               "ui": api.flow_run_ui(finished.id), "cases": len(rows),
               "ok": sum(r["status"] == "ok" for r in rows),
               "failed": sum(r["status"] == "failed" for r in rows),
               "awaiting_review": sum(r["status"] == "awaiting review" for r in rows),
               "rows": rows}
    if json_out:
        print_json(summary)
    else:
        console.print(f"flow run {finished.state.lower()}"
                      + (f": {finished.message}" if not finished.ok and finished.message else ""),
                      highlight=False)
        for row in rows:
            extra = ", ".join(f"{k} {v}" for k, v in row.items()
                              if k not in ("series", "series_uid", "orthanc_id", "status", "reason",
                                           "cached", "seg_result", "sr_result"))
            console.print(f"  {row['status']:<15} {row['series']:<30} {row['reason'] or extra}",
                          highlight=False)
    if not finished.ok or summary["failed"]:
        raise typer.Exit(1)


@app.command()
def features(
    site: str | None = SITE,
    out: Path = typer.Option(..., "--out", help="CSV or Parquet file (by extension)."),
    cohort: str | None = typer.Option(None, help="Only the series of this cohort."),
    json_out: bool = JSON,
) -> None:
    """Export the catalog's feature table: one row per series, segment and feature of the
    current result (radflow.results.current: a correction, then accepted, then draft; never
    rejected or superseded), with its IBSI code, unit, the result's id, algorithm, version,
    parameters' hash and status."""
    from radflow.catalog.db import session_scope
    from radflow.cohorts import load_cohort, select_series
    from radflow.results.store import feature_table

    with session_scope(site_catalog_url(site)) as session:
        uids = None
        if cohort:
            definition, _ = load_cohort(session, cohort)
            uids = [s.series_uid for s in select_series(session, definition)]
        table = feature_table(session, series_uids=uids)
    columns = ("source_series_uid", "segment_number", "segment_label", "feature", "code", "value",
               "unit", "result_id", "algorithm", "version", "params_hash", "status")
    if out.suffix == ".parquet":
        table.to_parquet(out, columns)
    else:
        table.to_csv(out, columns)
    report(json_out, {"rows": len(table.rows), "file": str(out)},
           f"wrote {len(table.rows)} feature values to {out}")
