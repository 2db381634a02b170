"""``export-cohort``: a de-identified export the site web app filed and a data steward approved,
run on the site's worker (radflow.export.run does the work; the export's request file keeps
its state and progress for the cohort's page)."""

from __future__ import annotations

from typing import Any

from prefect import flow


@flow(name="export-cohort", log_prints=False)
def export_cohort(export_id: str, site: str | None = None) -> dict[str, Any]:
    """Run the approved export ``export_id`` of the site (its project, cohort and target are
    in its request: `radflow export show ID`)."""
    from pathlib import Path

    from radflow.blocks import Site
    from radflow.export import run
    from radflow.runtime import site_name, site_runtime

    name = site_name(site)
    runtime = site_runtime(name)
    done = run.execute(Path(Site.load(name).root), runtime.catalog_url, runtime.orthanc,
                       export_id, actor=f"radflow:{name}:worker")
    return {"export": export_id, **(done["result"] or {})}
