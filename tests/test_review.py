"""Review steps with the real stack: a case run suspends (no process held), shows its input
schema as Prefect's UI would, refuses invalid input, and resumes through the same API call the
UI makes. Accept quantifies the model's SEG, reject quantifies nothing, a correction is recorded
with lineage and quantified instead, and an expired review ends the case by its policy. Every
step is in the audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import send, wait_settled
from sqlmodel import col, select

from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, DerivedResult, FeatureValue, Review
from radflow.errors import SiteError

pytestmark = [pytest.mark.services, pytest.mark.slow]


def case_ref(orthanc, site, synth_dir: Path, index: int):
    wait_settled(site)
    send(site, synth_dir / f"case_{index:03d}")
    wait_settled(site)
    uid = json.loads((synth_dir / "manifest.json").read_text())["cases"][index]["series_uid"]
    return orthanc.series_by_uid(uid)


def start_review(site, ref, **options) -> str:
    """Start a reviewed case run on the worker and wait until it suspends; returns its id."""
    api = site.prefect()
    run = api.create_flow_run("segment-and-quantify-case/alpha",
                              {"series": ref, "site": "alpha", "review": True, **options})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = api.flow_run_state(run.id)
        if state.get("type") == "PAUSED":
            return run.id
        assert state.get("type") not in ("FAILED", "CRASHED", "COMPLETED"), state
        time.sleep(0.5)
    raise AssertionError(f"run {run.id} did not suspend")


def results(site, series_uid: str, kind: str) -> list[DerivedResult]:
    with session_scope(site.catalog_url) as session:
        return list(session.exec(select(DerivedResult).where(
            DerivedResult.source_series_uid == series_uid, DerivedResult.kind == kind)
            .order_by(col(DerivedResult.id))))


def audit_actions(site, result: DerivedResult) -> list[str]:
    """The audit events of the review of a SEG result (subject ``review:<key>``)."""
    from radflow_review.step import review_key

    from radflow.results.store import to_ref

    key = review_key(to_ref(result))
    with session_scope(site.catalog_url) as session:
        return [e.action for e in session.exec(select(AuditEvent).where(
            AuditEvent.subject == f"review:{key}").order_by(col(AuditEvent.seq)))]


def run_processes(site, run_id: str, settle: float = 20.0) -> int:
    """Processes the site's worker runs for one flow run, once they had ``settle`` seconds to
    end."""
    from radflow.site.components import component

    worker = component("worker").process(site).process()
    deadline = time.monotonic() + settle
    while True:
        running = 0
        for child in worker.children(recursive=True):
            try:
                running += child.environ().get("PREFECT__FLOW_RUN_ID") == run_id
            except psutil.Error:
                pass
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(0.5)


def test_accept_resumes_the_run_and_quantifies_the_model_seg(orthanc, site, synth_dir) -> None:
    ref = case_ref(orthanc, site, synth_dir, 0)
    run_id = start_review(site, ref)
    api = site.prefect()
    assert run_processes(site, run_id) == 0  # waiting holds no process
    with session_scope(site.catalog_url) as session:
        row = session.exec(select(Review).where(Review.flow_run_id == run_id)).one()
    assert row.status == "open" and row.assignee == "role:radiologist" and row.result_id

    keyset = api.flow_run_state(run_id)["state_details"]["run_input_keyset"]
    schema = api.run_input_schema(run_id, keyset["schema"])  # what Prefect's UI renders
    assert set(schema["properties"]) >= {"decision", "comment", "reviewer", "corrected_seg_uid"}
    with pytest.raises(SiteError, match="was not resumed"):
        api.resume(run_id, {"decision": "maybe", "reviewer": "dr-a"})
    with pytest.raises(SiteError, match="was not resumed"):  # corrected needs the SEG's UID
        api.resume(run_id, {"decision": "corrected", "reviewer": "dr-a"})
    assert api.flow_run_state(run_id)["type"] == "PAUSED"

    api.resume(run_id, {"decision": "accept", "reviewer": "dr-a", "comment": "looks right"})
    assert api.wait(run_id, timeout=180).ok
    (seg,), (sr,) = results(site, ref.series_uid, "SEG"), results(site, ref.series_uid, "SR")
    assert (seg.status, seg.status_by, seg.status_reason) == ("accepted", "dr-a", "looks right")
    assert sr.derived_from_id == seg.id  # the radiomics used the model's SEG
    assert audit_actions(site, seg) == ["review.requested", "review.decided"]
    with session_scope(site.catalog_url) as session:
        assert session.get(Review, row.id).status == "decided"


def test_reject_quantifies_nothing(orthanc, site, synth_dir) -> None:
    ref = case_ref(orthanc, site, synth_dir, 1)
    run_id = start_review(site, ref)
    api = site.prefect()
    api.resume(run_id, {"decision": "reject", "reviewer": "dr-b", "comment": "misses the spleen"})
    assert api.wait(run_id, timeout=180).ok
    (seg,) = results(site, ref.series_uid, "SEG")
    assert seg.status == "rejected" and results(site, ref.series_uid, "SR") == []
    assert audit_actions(site, seg)[-1] == "review.decided"
    # the same case run again: the SEG was decided, so the run does not wait for it again
    again = api.create_flow_run("segment-and-quantify-case/alpha",
                                {"series": ref, "site": "alpha", "review": True})
    assert api.wait(again.id, timeout=180).ok
    assert results(site, ref.series_uid, "SR") == []
    with session_scope(site.catalog_url) as session:
        assert len(session.exec(select(Review).where(Review.result_id == seg.id)).all()) == 1


def corrected_seg(orthanc, ref, seg_row) -> tuple[str, float, float]:
    """What a clinician would store from Slicer: the model's SEG with half the liver removed.
    Returns its SeriesInstanceUID and the liver volume (mm3) before and after the edit."""
    import io

    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    from radflow.imaging import load_volume

    volume = load_volume(orthanc, ref)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(
        orthanc.instance_file(seg_row.orthanc_id))))
    uids = [ds.SOPInstanceUID for ds in volume.datasets]
    numbers = list(seg.get_segment_numbers())
    masks = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers,
                                              assert_missing_frames_are_empty=True)
    liver = next(n for n in numbers if seg.get_segment_description(n).segment_label == "liver")
    k = numbers.index(liver)
    masks = masks.copy()
    voxel = float(np.prod(volume.image.GetSpacing()))
    before = float((masks[..., k] > 0).sum()) * voxel
    masks[: len(uids) // 2, ..., k] = 0  # the clinician erases the upper half of the liver
    after = float((masks[..., k] > 0).sum()) * voxel
    descriptions = [seg.get_segment_description(n) for n in numbers]
    labels = np.zeros(masks.shape[:3], dtype=np.uint8)
    for index, number in enumerate(numbers):
        labels[masks[..., index] > 0] = number
    corrected = hd.seg.Segmentation(
        source_images=volume.datasets, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(),
        series_number=9003, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="3D Slicer", manufacturer_model_name="Segment Editor",
        software_versions="5", device_serial_number="1", omit_empty_frames=True)
    orthanc.store_dataset(corrected)
    return str(corrected.SeriesInstanceUID), before, after


def test_a_correction_is_recorded_and_quantified(orthanc, site, synth_dir) -> None:
    ref = case_ref(orthanc, site, synth_dir, 2)
    run_id = start_review(site, ref)
    (model_seg,) = results(site, ref.series_uid, "SEG")
    uid, before, after = corrected_seg(orthanc, ref, model_seg)
    assert 0 < after < before
    api = site.prefect()
    api.resume(run_id, {"decision": "corrected", "reviewer": "dr-c", "corrected_seg_uid": uid})
    assert api.wait(run_id, timeout=180).ok
    model_seg, fixed = results(site, ref.series_uid, "SEG")
    (sr,) = results(site, ref.series_uid, "SR")
    assert model_seg.status == "corrected" and fixed.status == "accepted"
    assert fixed.parent_id == model_seg.id and fixed.series_uid == uid
    assert sr.derived_from_id == fixed.id  # the radiomics used the clinician's SEG
    with session_scope(site.catalog_url) as session:
        liver = session.exec(select(FeatureValue).where(
            FeatureValue.result_pk == sr.id, FeatureValue.segment_label == "liver",
            FeatureValue.feature == "original_shape_VoxelVolume")).one().value
    assert liver == pytest.approx(after, rel=1e-6)  # the feature moved as the edit implies
    assert audit_actions(site, model_seg) == ["review.requested", "review.decided"]


def test_an_expired_review_ends_the_case_by_its_policy(orthanc, site, synth_dir, tmp_path) -> None:
    from radflow.synth import synthesize

    case = synthesize(tmp_path, 1, seed=77, matrix=48)[0]
    wait_settled(site)
    send(site, case.dicom_dir)
    wait_settled(site)
    ref = orthanc.series_by_uid(case.series_uid)
    run_id = start_review(site, ref, review_hours=1 / 3600)  # due one second from now
    api = site.prefect()
    assert api.wait(run_id, timeout=120).ok  # the review keeper resumed it as expired
    (seg,) = results(site, ref.series_uid, "SEG")
    assert seg.status == "draft" and results(site, ref.series_uid, "SR") == []
    with session_scope(site.catalog_url) as session:
        row = session.exec(select(Review).where(Review.flow_run_id == run_id)).one()
    assert (row.status, row.decision, row.reviewer) == ("expired", "expired", "radflow:expiry")
    assert audit_actions(site, seg) == ["review.requested", "review.reminded", "review.expired"]
    assert verify(site.catalog_url).ok


def test_a_cohort_run_leaves_cases_waiting_and_the_cli_decides(orthanc, site, cli,
                                                               tmp_path) -> None:
    """The fan-out starts each reviewed case as a run of its own and ends without waiting;
    `radflow review decide` resumes the case."""
    from radflow.synth import synthesize

    case = synthesize(tmp_path, 1, seed=78, matrix=48)[0]
    wait_settled(site)
    send(site, case.dicom_dir)
    wait_settled(site)
    out = cli("pipeline", "run", "--site", "alpha", "--series", case.series_uid, "--review",
              "--json", check=True)
    summary = json.loads(out.stdout)
    assert summary["state"] == "COMPLETED" and summary["awaiting_review"] == 1
    listed = json.loads(cli("review", "list", "--site", "alpha", "--json", check=True).stdout)
    (waiting,) = [r for r in listed if r["series_uid"] == case.series_uid]
    decided = json.loads(cli("review", "decide", str(waiting["id"]), "accept", "--comment",
                             "ok", "--site", "alpha", "--json", check=True).stdout)
    assert decided["state"] == "COMPLETED"
    (seg,) = results(site, case.series_uid, "SEG")
    assert seg.status == "accepted" and seg.status_by.startswith("cli:")
    assert len(results(site, case.series_uid, "SR")) == 1
