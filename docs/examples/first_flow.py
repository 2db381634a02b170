"""Your first radflow flow: liver volume (mL) of every series in a cohort.

    .venv/bin/python docs/examples/first_flow.py --site demo --cohort contrast-ct

It finds the tasks it needs by what they do (a segment task taking a SeriesRef, a quantify
task taking the SEG it makes), composes them like any Prefect tasks, and runs against the
site's Prefect server, so the run and its task runs show in the site's UI. Series done before
(same model version, same parameters) are not computed again.
"""

from __future__ import annotations

import argparse

from prefect import flow, get_run_logger

from radflow.sdk import ReportRef, SegmentationRef, SeriesRef, find_task, site_runtime
from radflow.tasks.selection import series_refs


@flow(name="liver-volumes")
def liver_volumes(cohort: str, site: str) -> dict[str, float]:
    """Segment each series of the cohort and read the liver's volume from its radiomics."""
    segment = find_task("segment", (SeriesRef,), SegmentationRef, prefer="nnunet").task
    quantify = find_task("quantify", (SegmentationRef,), ReportRef).task
    runtime = site_runtime(site)
    volumes = {}
    for series in series_refs(runtime.catalog_url, runtime.orthanc, cohort=cohort):
        report = quantify(segment(series, site=site), site=site)
        volumes[series.series_uid] = report.features.value("liver", "original_shape_VoxelVolume") / 1000
        get_run_logger().info("%s: liver %.0f mL", series.description, volumes[series.series_uid])
    return volumes


def main() -> None:
    from radflow.site import SiteManager
    from radflow.site.registration import site_prefect

    parser = argparse.ArgumentParser()
    parser.add_argument("--site", required=True)
    parser.add_argument("--cohort", required=True)
    args = parser.parse_args()
    with site_prefect(SiteManager().context(args.site)):  # talk to the site's Prefect server
        for uid, ml in liver_volumes(args.cohort, args.site).items():
            print(f"{uid}  liver {ml:.0f} mL")


if __name__ == "__main__":
    main()
