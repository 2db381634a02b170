"""The ``segment-and-quantify`` flow: nnU-Net segmentation to DICOM SEG, then pyradiomics to
DICOM SR (TID 1500), over a cohort or a list of series.

The work lives in the plugins' tasks (looked up through the plugin registry, so another plugin
offering the same tasks can stand in); this module only orchestrates: cases run in parallel
(``max_parallel`` at a time), a series already done with the same model version and parameters
is skipped (its cached result is reused), a failing case is reported with its reason and the
others finish, and the run ends with a summary artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from radflow.tasks.pipeline_report import case_row, pipeline_report
from radflow.tasks.selection import series_refs

from radflow.plugins import get_plugin
from radflow.runtime import site_runtime


def _reason(state: Any) -> str:
    message = state.message or state.type.value
    return message.split("\n")[0][:300]


@flow(name="segment-and-quantify", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def segment_and_quantify(cohort: str | None = None, series_uids: list[str] | None = None,
                         model: str = "radflow-abdomen-demo", params: str = "default",
                         site: str | None = None, max_parallel: int = 2,
                         force: bool = False) -> dict[str, Any]:
    """Segment and quantify every series of a cohort (or of a list of SeriesInstanceUIDs).

    Args:
        cohort: a saved cohort of the site (`radflow cohort create`).
        series_uids: or explicit SeriesInstanceUIDs.
        model: nnU-Net model (an NnUNetModel block / installed model name).
        params: radiomics parameters (a RadiomicsParams block name).
        site: the site (default: RADFLOW_SITE of the worker).
        max_parallel: cases in flight at once (model loaded once, shared).
        force: compute again even when a result with the same versions exists.
    """
    logger = get_run_logger()
    rt = site_runtime(site)
    refs = series_refs(rt.catalog_url, rt.orthanc, cohort, series_uids)
    segment = get_plugin("nnunet").task("segment").task
    quantify = get_plugin("radiomics").task("quantify").task
    logger.info("%d series to segment with %s and quantify with %s", len(refs), model, params)
    progress = create_progress_artifact(progress=0.0, key="segment-and-quantify-progress",
                                        description=f"{len(refs)} cases")
    rows: list[dict[str, Any]] = []
    for start in range(0, len(refs), max(1, max_parallel)):
        chunk = refs[start:start + max(1, max_parallel)]
        runs = [(ref, segment.submit(ref, model, site, force)) for ref in chunk]
        runs = [(ref, s, quantify.submit(s, params, site, force)) for ref, s in runs]
        for ref, seg_future, features_future in runs:
            features_future.wait()
            seg_future.wait()
            if features_future.state.is_completed():
                _, table = features_future.result()
                rows.append(case_row(ref, "ok", None, table))
            else:
                failed = seg_future if not seg_future.state.is_completed() else features_future
                rows.append(case_row(ref, "failed", _reason(failed.state), None))
                logger.warning("case %s failed: %s", ref.series_uid, rows[-1]["reason"])
        update_progress_artifact(progress, progress=100.0 * len(rows) / max(1, len(refs)))
    if rows:
        pipeline_report(rows, model, site)
    ok = sum(r["status"] == "ok" for r in rows)
    logger.info("%d of %d cases done, %d failed", ok, len(rows), len(rows) - ok)
    return {"cases": len(rows), "ok": ok, "failed": len(rows) - ok, "rows": rows}
