"""The review step: suspend the case run until a person decides, then apply the decision.

Waiting holds no process: the run is suspended (Prefect's ``suspend_flow_run``) and its process
exits. A decision is recorded on the review row with its audit event, and resumes the run
through the outbox (:mod:`radflow_review.decisions`); Prefect re-runs the case flow from the
top, the producers return what they made before (same keys), the step finds the recorded
decision and applies it once: a status change on the SEG (accepted, rejected, corrected with
lineage to the clinician's SEG).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from radflow.sdk import DicomInputError, SegmentationRef
from radflow_review.decision import ReviewDecision

POLICIES = ("exclude", "continue")
BACKSTOP = timedelta(days=30)  # Prefect's own timeout, far behind the due time radflow enforces


@dataclass(frozen=True)
class ReviewOutcome:
    """What the case does next: quantify ``segmentation`` (None: nothing to quantify)."""

    decision: str
    segmentation: SegmentationRef | None
    reviewer: str
    comment: str = ""


def review_key(seg: SegmentationRef) -> str:
    """The suspend key of the review of a SEG: stable across re-execution and retries."""
    return f"review-{seg.key.removeprefix('sha256:')[:32]}"


def review(seg: SegmentationRef, *, assignee: str = "role:radiologist", due_hours: float = 72.0,
           remind_hours: float | None = None, on_expiry: str = "exclude",
           site: str | None = None) -> ReviewOutcome:
    """Ask for a decision on ``seg`` and wait for it (in a flow run with a deployment).

    Args:
        seg: the segmentation to review.
        assignee: a user's subject, or ``role:<role>`` (e.g. ``role:radiologist``).
        due_hours: when the review expires (recorded as ``expired``).
        remind_hours: when to remind (default: half-way to the due time).
        on_expiry: ``exclude`` (the case ends without quantification) or ``continue``
            (quantify the model's SEG, which stays a draft).
        site: the site (default: RADFLOW_SITE).

    Raises:
        ConfigurationError: an unknown expiry policy.
        DicomInputError: the corrected SEG named by the decision is not a SEG of this series.
    """
    from prefect.flow_runs import suspend_flow_run
    from prefect.runtime import flow_run

    from radflow.errors import ConfigurationError
    from radflow.runtime import site_runtime

    if on_expiry not in POLICIES:
        raise ConfigurationError(f"unknown expiry policy {on_expiry!r}",
                                 fix=f"use one of {', '.join(POLICIES)}")
    rt = site_runtime(site)
    key = review_key(seg)
    now = datetime.now(UTC)
    due = now + timedelta(hours=due_hours)
    remind = now + timedelta(hours=remind_hours if remind_hours is not None else due_hours / 2)
    row = open_review(rt.catalog_url, key, seg, str(flow_run.get_id()), assignee, due, remind,
                      on_expiry)
    if row.decision is not None:  # decided: before this run, or while it waited (a resumed run
        # runs again from the top and gets here): the recorded decision applies
        return apply_decision(rt, key, seg, ReviewDecision(
            decision=row.decision, reviewer=row.reviewer, comment=row.comment or "",
            corrected_seg_uid=row.corrected_seg_uid))
    decision = suspend_flow_run(wait_for_input=ReviewDecision, key=key,
                                timeout=int((timedelta(hours=due_hours) + BACKSTOP)
                                            .total_seconds()))
    return apply_decision(rt, key, seg, decision)


def open_review(catalog_url: str, key: str, seg: SegmentationRef, flow_run_id: str,
                assignee: str, due: datetime, remind: datetime, on_expiry: str) -> Any:
    """The review row of this SEG: recorded the first time a run reaches the step. A later run
    that reaches it while the review is still open takes it over (the earlier run, still
    suspended, is cancelled): one review per SEG, one run waiting on it."""
    from sqlmodel import select

    from radflow.audit import record
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review
    from radflow.enums import ReviewStatus

    with session_scope(catalog_url) as session:
        row = session.exec(select(Review).where(Review.key == key)).first()
        if row is not None:
            earlier = row.flow_run_id
            if row.status == ReviewStatus.OPEN and earlier != flow_run_id:
                row.flow_run_id = flow_run_id
                session.add(row)
            else:
                return row
        else:
            row = Review(key=key, flow_run_id=flow_run_id, result_id=seg.result_id,
                         source_series_uid=seg.source.series_uid, assignee=assignee,
                         due_at=due, remind_at=remind, on_expiry=on_expiry)
            session.add(row)
            earlier = None
    if earlier is not None:
        _cancel_if_waiting(earlier)
        record(catalog_url, actor="radflow:review", action="review.moved",
               subject=f"review:{key}", detail={"from_run": earlier, "to_run": flow_run_id})
        return row
    record(catalog_url, actor="radflow:review", action="review.requested",
           subject=f"review:{key}",
           detail={"result": seg.result_id, "result_key": seg.key, "flow_run": flow_run_id,
                   "assignee": assignee, "due": due.isoformat(), "algorithm": seg.algorithm,
                   "version": seg.algorithm_version})
    return row


def _cancel_if_waiting(flow_run_id: str) -> None:
    """Cancel a suspended run whose review another run took over."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_paused():
            client.set_flow_run_state(flow_run_id, Cancelled(
                message="its review was taken over by a later run of the same case"), force=True)


def apply_decision(rt: Any, key: str, seg: SegmentationRef,
                   decision: ReviewDecision) -> ReviewOutcome:
    """Apply the review's decision once: the one recorded on the review row when it was made
    (with its audit event; :mod:`radflow_review.decisions`), or, for a run resumed from
    Prefect's UI, ``decision``, recorded now. The status changes are applied by the first run
    that gets here (``applied_at``); a re-executed run gets the same outcome and changes
    nothing, and writes no second audit event."""
    from sqlalchemy import update
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import Review, utcnow
    from radflow.enums import ResultStatus
    from radflow.results import store
    from radflow_review.decisions import ensure_recorded

    decision = ensure_recorded(rt.catalog_url, key, decision)
    corrected = None
    if decision.decision == "corrected":
        corrected = _record_correction(rt, seg, decision)  # idempotent (the result's key)
    with session_scope(rt.catalog_url) as session:
        first_time = session.execute(update(Review).where(
            Review.key == key, col(Review.applied_at).is_(None)).values(
            applied_at=utcnow())).rowcount
        if first_time:
            status = {"accept": ResultStatus.ACCEPTED, "reject": ResultStatus.REJECTED}.get(
                decision.decision)
            if status is not None:
                store.set_status(session, seg.result_id, status, by=decision.reviewer,
                                 reason=decision.comment or None)
            elif corrected is not None:
                store.set_status(session, seg.result_id, ResultStatus.CORRECTED,
                                 by=decision.reviewer, reason=decision.comment or None,
                                 correction_id=corrected.result_id)
        on_expiry = session.exec(select(Review.on_expiry).where(Review.key == key)).one()
    quantify = {"accept": seg, "corrected": corrected, "reject": None,
                "expired": seg if on_expiry == "continue" else None}[decision.decision]
    return ReviewOutcome(decision.decision, quantify, decision.reviewer, decision.comment)


def _record_correction(rt: Any, seg: SegmentationRef,
                       decision: ReviewDecision) -> SegmentationRef:
    """Record the clinician's SEG (already in Orthanc) as a result: the corrected version of
    ``seg``, accepted by the reviewer who made it."""
    import pydicom

    from radflow.catalog.db import session_scope
    from radflow.enums import ResultKind, ResultStatus
    from radflow.errors import OrthancError
    from radflow.results import ResultKey, revisions, store

    uid = decision.corrected_seg_uid
    try:
        found = rt.orthanc.series_by_uid(uid)
    except OrthancError as exc:
        raise DicomInputError(f"the corrected SEG {uid} is not in the site's Orthanc",
                              fix="store the corrected SEG first (C-STORE or STOW-RS), then "
                                  "decide") from exc
    instance = rt.orthanc.series_instances(found.orthanc_id)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(rt.orthanc.instance_file(instance)),
                             stop_before_pixels=True)
    referenced = [s.SeriesInstanceUID for s in ds.get("ReferencedSeriesSequence", [])]
    if ds.get("Modality") != "SEG" or seg.source.series_uid not in referenced:
        raise DicomInputError(
            f"series {uid} is not a SEG of series {seg.source.series_uid} (modality "
            f"{ds.get('Modality')}, references {referenced})",
            fix="pick a SEG that references the case's series")
    key = ResultKey(ResultKind.SEG, (seg.source.series_uid, seg.sop_instance_uid,
                                     str(ds.SOPInstanceUID)), revisions.CORRECTION_ALGORITHM, "1",
                    decision.reviewer)
    with session_scope(rt.catalog_url) as session:
        row = store.record(session, key, seg.source, orthanc_id=instance,
                           sop_instance_uid=str(ds.SOPInstanceUID), series_uid=uid,
                           detail={"segments": {int(s.SegmentNumber): str(s.SegmentLabel)
                                                for s in ds.SegmentSequence},
                                   "corrects": seg.result_id,
                                   "revision": revisions.number_of(ds)},
                           derived_from_id=None, status=ResultStatus.ACCEPTED,
                           status_by=decision.reviewer)
        return store.to_ref(row, seg.source)
