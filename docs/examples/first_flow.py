"""Your first radflow flow: liver volume (mL) of every series in a cohort.

    .venv/bin/python docs/examples/first_flow.py --site demo --cohort contrast-ct

It composes the plugins' tasks (nnU-Net segmentation, pyradiomics features) like any Prefect
tasks, and runs against the site's Prefect server, so the run and its task runs show in the
site's UI. Series done before (same model version, same parameters) are not computed again.
"""

from __future__ import annotations

import argparse

from prefect import flow, get_run_logger
from radflow.tasks.selection import series_refs

from radflow.plugins import get_plugin
from radflow.runtime import site_runtime


@flow(name="liver-volumes")
def liver_volumes(cohort: str, site: str) -> dict[str, float]:
    """Segment each series of the cohort and read the liver's volume from its radiomics."""
    segment = get_plugin("nnunet").task("segment").task
    quantify = get_plugin("radiomics").task("quantify").task
    runtime = site_runtime(site)
    volumes = {}
    for series in series_refs(runtime.catalog_url, runtime.orthanc, cohort=cohort):
        seg = segment(series, site=site)
        _report, features = quantify(seg, site=site)
        volumes[series.series_uid] = features.value("liver", "original_shape_VoxelVolume") / 1000
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
