"""``segment-and-quantify``: segmentation to DICOM SEG, then radiomics to DICOM SR, per case.

Two flows:

* ``segment-and-quantify-case``: one series. It is the unit of work, of review and of
  deployment: with ``review=True`` it suspends (no process held) until a clinician accepts,
  rejects or corrects its SEG, then re-runs from the top. Running it again does nothing twice: the
  core result service returns what an earlier run made (same key, object still in Orthanc).
* ``segment-and-quantify``: a thin fan-out. It pins the cohort's membership once (with the
  cohort's hash), then runs one case flow per series, at most ``max_parallel`` at a time, each
  started as soon as another finishes. ``isolation="inline"`` runs the cases as subflows in this
  process (the model loaded once, shared); ``"runs"`` starts each as its own flow run of the case
  deployment (each can suspend on its own; needed for review steps).

The tasks are found by what they do (a ``segment`` task taking a SeriesRef and returning a
SegmentationRef; a ``quantify`` task taking a SegmentationRef and returning a ReportRef), so any
plugin offering them can stand in.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from radflow.errors import RadflowError
from radflow.plugins import find_step, find_task
from radflow.runtime import site_runtime
from radflow.tasks.fanout import run_cases
from radflow.tasks.pipeline_report import case_row, failed_row, pipeline_report, reviewed_row
from radflow.tasks.selection import pin_series
from radflow.types import ReportRef, SegmentationRef, SeriesRef

DEFAULT_MODEL = "radflow-abdomen-demo"


def _call(spec: Any, first: Any, options: dict[str, Any], site: str | None, force: bool) -> Any:
    """Call a task with the options it takes (a stand-in plugin may take fewer)."""
    accepted = {k: v for k, v in options.items() if k in spec.inputs}
    return spec.task(first, **accepted, site=site, force=force)


@flow(name="segment-and-quantify-case", log_prints=False, persist_result=True)
def segment_and_quantify_case(series: SeriesRef, model: str = DEFAULT_MODEL,
                              params: str = "default", site: str | None = None,
                              force: bool = False, segmenter: str | None = None,
                              quantifier: str | None = None, review: bool = False,
                              assignee: str = "role:radiologist", review_hours: float = 72.0,
                              on_expiry: str = "exclude") -> dict[str, Any]:
    """Segment one series, optionally have a clinician review the SEG, and quantify.

    Args:
        series: the series (Orthanc id and SeriesInstanceUID).
        model: the segmentation model (for nnU-Net: an installed model's name).
        params: the radiomics parameters (a RadiomicsParams block name).
        site: the site (default: RADFLOW_SITE of the worker).
        force: compute again even when a result with the same key exists: a new object (new
            UIDs) that supersedes the old one (which stays in Orthanc), starting as draft.
        segmenter: the plugin whose ``segment`` task to use when several offer one.
        quantifier: the plugin whose ``quantify`` task to use when several offer one.
        review: suspend for a review decision before quantifying (needs a deployment run).
        assignee: who reviews: a user's subject or ``role:<role>``.
        review_hours: when the review expires.
        on_expiry: ``exclude`` (no quantification) or ``continue`` (quantify the model's SEG).
    """
    segment = find_task("segment", (SeriesRef,), SegmentationRef, prefer=segmenter or "nnunet")
    quantify = find_task("quantify", (SegmentationRef,), ReportRef,
                         prefer=quantifier or "radiomics")
    try:
        seg = _call(segment, series, {"model": model}, site, force)
        reviewed = None
        if review:
            reviewed = find_step("review")(seg, assignee=assignee, due_hours=review_hours,
                                           on_expiry=on_expiry, site=site)
            if reviewed.segmentation is None:  # rejected, or expired and excluded
                return reviewed_row(series, seg, reviewed)
            seg = reviewed.segmentation
        report = _call(quantify, seg, {"params": params}, site, force)
    except RadflowError as exc:  # bad input, an empty result...: this case ends, with its reason
        row = failed_row(series, exc.message)
        get_run_logger().warning("case %s failed: %s", series.series_uid, exc.message)
        return Failed(message=exc.message[:500], data=row)
    row = case_row(series, seg, report)
    if reviewed is not None:
        row.update(review=reviewed.decision, reviewer=reviewed.reviewer)
    return row


@flow(name="segment-and-quantify", task_runner=ThreadPoolTaskRunner(max_workers=8),
      log_prints=False)
def segment_and_quantify(cohort: str | None = None, series_uids: list[str] | None = None,
                         definition: dict[str, Any] | None = None, model: str = DEFAULT_MODEL,
                         params: str = "default", site: str | None = None,
                         max_parallel: int = 2, force: bool = False,
                         isolation: str = "inline", expect_hash: str | None = None,
                         segmenter: str | None = None, quantifier: str | None = None,
                         review: bool = False, assignee: str = "role:radiologist",
                         review_hours: float = 72.0,
                         on_expiry: str = "exclude",
                         dask_address: str | None = None) -> dict[str, Any]:
    """Segment and quantify every series of a cohort (pinned once), one case flow per series.

    Args:
        cohort: a saved cohort of the site (`radflow cohort create`); or
        series_uids: explicit SeriesInstanceUIDs; or
        definition: a cohort definition (JSON), e.g. from a federated study.
        model: segmentation model.
        params: radiomics parameters (a RadiomicsParams block name).
        site: the site (default: RADFLOW_SITE of the worker).
        max_parallel: cases in flight at once.
        force: compute again even when results with the same keys exist (new objects that
            supersede the old ones).
        isolation: ``inline`` (subflows in this process, the model shared), ``runs`` (one
            flow run of the case deployment per series) or ``dask`` (subflows on a Dask
            cluster: a LocalCluster of ``max_parallel`` processes, or ``dask_address``).
        expect_hash: refuse to run unless the cohort's content hash is this one.
        segmenter: plugin whose segment task to use, when several offer one.
        quantifier: plugin whose quantify task to use, when several offer one.
        review: have a clinician review every SEG before it is quantified (each case suspends
            on its own; needs ``isolation="runs"``, which it then uses).
        assignee: who reviews (a user's subject or ``role:<role>``).
        review_hours: when a review expires.
        on_expiry: ``exclude`` or ``continue`` for a review that expired.
        dask_address: a Dask scheduler (``tcp://host:8786``) for ``isolation="dask"``; none:
            a LocalCluster on the worker's machine.
    """
    logger = get_run_logger()
    if review:
        isolation = "runs"  # a suspended case must be a flow run of its own
    rt = site_runtime(site)
    content_hash, refs = pin_series(rt.catalog_url, rt.orthanc, str(flow_run.get_id()),
                                    cohort=cohort, definition=definition,
                                    series_uids=series_uids, expect_hash=expect_hash)
    logger.info("%d series pinned (%s); %s, %d at a time", len(refs), content_hash, isolation,
                max_parallel)
    options = {"model": model, "params": params, "site": rt.name, "force": force,
               "segmenter": segmenter, "quantifier": quantifier}
    if review:
        options.update(review=True, assignee=assignee, review_hours=review_hours,
                       on_expiry=on_expiry)
    rows = run_cases(segment_and_quantify_case, refs, options, max_parallel=max_parallel,
                     isolation=isolation, site=rt.name, dask_address=dask_address)
    if rows:
        pipeline_report(rows, model, site)
    ok = sum(r["status"] == "ok" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    waiting = sum(r["status"] == "awaiting review" for r in rows)
    logger.info("%d of %d cases done, %d failed, %d awaiting review", ok, len(rows), failed,
                waiting)
    return {"cases": len(rows), "ok": ok, "failed": failed, "awaiting_review": waiting,
            "cohort_hash": content_hash, "rows": rows}
