"""Labels for federated nnU-Net: the synthetic ground truth as a MANUAL DICOM SEG imported as an
accepted label, and a site's training set built from the current accepted or corrected SEGs of
a cohort (read from the session site's real Orthanc), with a seeded split recorded at the site.

Tiny cases (32x32 slices): the whole module takes seconds once the session site is up."""

from __future__ import annotations

import getpass
import gzip
import io
import json
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import dciodvfy, send, wait_settled
from sqlmodel import col, select
from test_review import corrected_seg

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, DerivedResult
from radflow.errors import ConfigurationError
from radflow_nnunet.federated.labels_seg import LabelError, label_volume
from radflow_nnunet.federated.labels_split import case_id, case_id_key, split_cases

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
IDS = [f"case_{i:012x}" for i in range(40)]


# -- the split and the label mapping, without services ------------------------------------


def test_the_split_is_seeded_and_stable_as_the_cohort_grows() -> None:
    train, held = split_cases(IDS, 1, 0.25)
    assert (train, held) == split_cases(list(reversed(IDS)), 1, 0.25)  # order does not matter
    assert set(train) | set(held) == set(IDS) and not set(train) & set(held)
    assert 0 < len(held) < len(IDS)
    assert split_cases(IDS, 2, 0.25) != (train, held)  # another seed, another split
    # a grown cohort: no case changes side
    small_train, small_held = split_cases(IDS[:30], 1, 0.25)
    assert set(small_train) <= set(train) and set(small_held) <= set(held)
    # a small site still trains and validates; no held-out fraction, no held-out case
    assert [len(side) for side in split_cases(IDS[:2], 5, 0.01)] == [1, 1]
    assert [len(side) for side in split_cases(IDS[:2], 5, 0.99)] == [1, 1]
    assert split_cases(IDS[:5], 5, 0.0) == (sorted(IDS[:5]), [])
    with pytest.raises(ConfigurationError, match=r"in \[0, 1\)"):
        split_cases(IDS, 1, 1.0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> list:
    """Seven tiny cases with their ground truth as a SEG (A, B, C imported; D draft, E
    corrected, F rejected model SEGs; G a misaligned imported SEG)."""
    from radflow.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("fed-labels"), 7, seed=1212, matrix=32, seg=True)


def series_datasets(case) -> list:
    datasets = [pydicom.dcmread(p) for p in sorted(case.dicom_dir.iterdir())]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def truth(case) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))


def test_a_seg_becomes_the_label_map_of_its_series(synth) -> None:
    case = synth[0]
    datasets, seg = series_datasets(case), pydicom.dcmread(case.seg_path)
    assert dciodvfy(case.seg_path) == ([], [])  # no error, no warning
    algorithm_types = {s.SegmentAlgorithmType for s in seg.SegmentSequence}
    assert algorithm_types == {"MANUAL"} and seg.SegmentationType == "BINARY"
    assert [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
            for s in seg.SegmentSequence] == [("liver", "10200004"), ("spleen", "78961009"),
                                              ("kidney", "64033007")]
    assert np.array_equal(label_volume(seg, datasets, LABELS).labels, truth(case))
    # another map: renumbered, an extra segment ignored, a missing one background; both noted
    other = label_volume(seg, datasets, {"background": 0, "kidney": 1, "liver": 2,
                                         "pancreas": 3})
    assert np.array_equal(other.labels == 2, truth(case) == 1)
    assert np.array_equal(other.labels == 1, truth(case) == 3) and not (other.labels == 3).any()
    assert any("spleen" in n and "ignored" in n for n in other.notes)
    assert any("pancreas" in n and "background" in n for n in other.notes)
    # a SEG of another series, or on images this series does not hold, is refused with why
    with pytest.raises(LabelError, match="does not reference"):
        label_volume(seg, series_datasets(synth[1]), LABELS)
    with pytest.raises(LabelError, match="misaligned"):
        label_volume(misaligned_seg(synth[1]), series_datasets(synth[1]), LABELS)
    del seg.Rows  # unreadable: refused with why, never a crash
    with pytest.raises(LabelError, match="cannot be read"):
        label_volume(seg, datasets, LABELS)


def misaligned_seg(case):
    """A SEG of the case's series whose frames reference images the series does not hold."""
    from radflow.synth.seg import ground_truth_seg
    from radflow.uids import derived_uid

    datasets = series_datasets(case)
    for ds in datasets:
        ds.SOPInstanceUID = derived_uid("elsewhere", ds.SOPInstanceUID)
    return ground_truth_seg(datasets, truth(case), {1: "liver", 2: "spleen", 3: "kidney"})


# -- at the session site ------------------------------------------------------------------


def record_model_seg(site, case, ref) -> DerivedResult:
    """What the segment task records: the nnU-Net plugin's SEG (here of the ground truth), a
    draft result of the model's line."""
    from radflow.anatomy import code_for
    from radflow.enums import ResultKind
    from radflow.results import ResultKey, store
    from radflow_nnunet.seg import write_seg

    specs = {str(v): {"name": n, "code": code_for(n).value, "scheme": "SCT",
                      "meaning": code_for(n).meaning} for n, v in LABELS.items() if v}
    key = ResultKey(ResultKind.SEG, (ref.series_uid,), "radflow-abdomen-demo", "1.0.0", "p")
    seg = write_seg(series_datasets(case), truth(case), specs, "radflow-abdomen-demo", "1.0.0",
                    series_uid=key.series_uid, instance_uid=key.instance_uid, uid=key.uid)
    stored = site.orthanc_client().store_dataset(seg)
    with session_scope(site.catalog_url) as session:
        return store.record(session, key, ref, orthanc_id=stored.instance_id,
                            sop_instance_uid=key.instance_uid, series_uid=key.series_uid)


def correct(site, ref, model: DerivedResult) -> tuple[DerivedResult, str]:
    """A clinician's correction of the model's SEG (half of the liver erased), recorded as the
    review step records one; returns the correction's result and its SEG's series UID."""
    from radflow.enums import ResultKind, ResultStatus
    from radflow.results import ResultKey, store

    orthanc = site.orthanc_client()
    uid, before, after = corrected_seg(orthanc, ref, model)
    assert 0 < after < before
    instance = orthanc.series_instances(orthanc.series_by_uid(uid).orthanc_id)[0]
    sop = str(pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)),
                              stop_before_pixels=True).SOPInstanceUID)
    with session_scope(site.catalog_url) as session:
        fix = store.record(session, ResultKey(ResultKind.SEG, (ref.series_uid,
                                                               model.sop_instance_uid, sop),
                                              "correction", "1", "dr-e"), ref,
                           orthanc_id=instance, sop_instance_uid=sop, series_uid=uid,
                           status=ResultStatus.ACCEPTED, status_by="dr-e")
        store.set_status(session, model.id, "corrected", by="dr-e", correction_id=fix.id)
        return fix, uid


@pytest.fixture(scope="module")
def labelled(site, synth, cli, tmp_path_factory) -> dict:
    """The session site holding the seven cases (and nothing else), their labels recorded."""
    from radflow.data.labels import import_labels
    from radflow.results import store

    orthanc = site.orthanc_client()
    for patient in orthanc.patients():
        orthanc.delete("patients", patient)
    wait_settled(site)
    a, b, c, d, e, f, g = synth
    send(site, a.dicom_dir.parent, b.dicom_dir.parent, c.dicom_dir.parent,  # images and SEG
         d.dicom_dir, e.dicom_dir, f.dicom_dir, g.dicom_dir)
    wait_settled(site)
    refs = [orthanc.series_by_uid(case.series_uid) for case in synth]
    imported = cli("data", "import-labels", str(a.dicom_dir.parent), str(b.dicom_dir.parent),
                   str(c.dicom_dir.parent), "--site", site.name, "--json", check=True)
    bad = tmp_path_factory.mktemp("misaligned") / "SEG.dcm"
    misaligned_seg(g).save_as(bad, enforce_file_format=True)
    again = import_labels([a.seg_path, bad], client=orthanc, catalog_url=site.catalog_url,
                          by="cli:steward")
    models = {name: record_model_seg(site, case, ref)
              for name, case, ref in (("d", d, refs[3]), ("e", e, refs[4]), ("f", f, refs[5]))}
    with session_scope(site.catalog_url) as session:
        store.set_status(session, models["f"].id, "rejected", by="dr-f", reason="misses spleen")
    fix, fix_uid = correct(site, refs[4], models["e"])
    return {"refs": refs, "imported": json.loads(imported.stdout), "again": again,
            "models": models, "fix": fix, "fix_uid": fix_uid}


@pytest.mark.services
def test_imported_ground_truth_is_an_accepted_label(site, synth, labelled) -> None:
    imported, again = labelled["imported"], labelled["again"]
    assert imported["failed"] == [] and len(imported["imported"]) == 3
    assert imported["not_seg"] == sum(case.slices for case in synth[:3])  # the images
    assert [i.new for i in again.imported] == [False, True] and again.failed == []
    with session_scope(site.catalog_url) as session:
        rows = list(session.exec(select(DerivedResult).where(
            DerivedResult.algorithm == "ground-truth").order_by(col(DerivedResult.id))))
        events = list(session.exec(select(AuditEvent).where(
            AuditEvent.action == "labels.imported")))
    assert [r.source_series_uid for r in rows] == [c.series_uid for c in (*synth[:3], synth[6])]
    assert {(r.status.value, r.status_reason, r.kind) for r in rows} == {
        ("accepted", "imported ground truth", "SEG")}
    assert [r.status_by for r in rows] == [f"cli:{getpass.getuser()}"] * 3 + ["cli:steward"]
    ours = [e for e in events if e.subject in {f"result:{r.key}" for r in rows}]
    assert len(ours) == 4  # importing again recorded nothing again (other tests import too)
    # the SEG in Orthanc is the one synth wrote, valid
    orthanc = site.orthanc_client()
    path = synth[0].seg_path.parent / "from-orthanc.dcm"
    path.write_bytes(orthanc.instance_file(rows[0].orthanc_id))
    assert dciodvfy(path) == ([], [])
    assert pydicom.dcmread(path).SOPInstanceUID == pydicom.dcmread(synth[0].seg_path) \
        .SOPInstanceUID


def nifti(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.services
def test_the_training_set_takes_accepted_and_corrected_segs(site, synth, labelled,
                                                            tmp_path) -> None:
    from radflow_nnunet.federated.labels import build_training_set

    cohort = {"where": {"field": "modality", "op": "eq", "value": "CT"}}
    out = tmp_path / "Dataset601_Fed"
    built = build_training_set(site, cohort, LABELS, out, study="fed-labels-1", seed=3,
                               held_out_fraction=0.3)
    key = case_id_key(site.paths.root)
    ids = [case_id(key, case.series_uid) for case in synth]
    a, b, c, _d, e, _f, g = ids
    assert sorted(built.train + built.held_out) == sorted([a, b, c, e])  # not D, F, G
    assert built.train and built.held_out and built.unlabelled == 2  # D (draft), F (rejected)
    assert [(s.case_id, "misaligned" in s.reason) for s in built.skipped] == [(g, True)]
    assert built.labels == LABELS

    def label_file(case: str) -> Path:
        side = "labelsTr" if case in built.train else "labelsTs"
        return out / side / f"{case}.nii.gz"

    for case, synth_case in zip((a, b, c), synth[:3], strict=True):  # imported: voxel for voxel
        assert np.array_equal(nifti(label_file(case)), truth(synth_case)), case
        images = "imagesTr" if case in built.train else "imagesTs"
        assert nifti(out / images / f"{case}_0000.nii.gz").shape == truth(synth_case).shape
    # E: the clinician's correction, not the model's SEG (its erased liver is background)
    labels_e, model_e = nifti(label_file(e)), truth(synth[4])
    erased = (model_e == 1) & (labels_e == 0)
    assert erased.any() and not erased[labels_e.shape[0] // 2:].any()
    assert np.array_equal(labels_e[model_e != 1], model_e[model_e != 1])
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == LABELS and dataset["numTraining"] == len(built.train)
    assert len(list((out / "imagesTr").iterdir())) == len(built.train)

    # the split is recorded at the site, owner-only, with each case's series
    record = json.loads(built.record.read_text())
    assert built.record == site.paths.root / "studies" / "fed-labels-1" / "training-split.json"
    assert stat.S_IMODE(built.record.stat().st_mode) == 0o600
    assert (record["seed"], record["train"], record["held_out"]) == (3, built.train,
                                                                    built.held_out)
    assert record["cases"][e]["series_uid"] == synth[4].series_uid
    assert record["cases"][e]["result_id"] == labelled["fix"].id
    assert record["skipped"][0]["case_id"] == g

    # nothing identifying in the dataset's names, dataset.json or the NIfTI files
    secrets = {s for case in synth for s in (case.patient_id, case.study_uid, case.series_uid)}
    secrets |= {str(series_datasets(case)[0].PatientName) for case in synth}
    secrets.add(labelled["fix_uid"])
    for path in out.rglob("*"):
        assert not any(s in str(path.relative_to(out)) for s in secrets), path
        if path.is_file():
            body = path.read_bytes()
            body = gzip.decompress(body) if path.suffix == ".gz" else body
            assert not any(s.encode() in body for s in secrets), path

    # the same seed makes the same split again; another seed (one that differs) its own
    same = build_training_set(site, cohort, LABELS, out, study="fed-labels-1", seed=3,
                              held_out_fraction=0.3)
    assert (same.train, same.held_out) == (built.train, built.held_out)
    cases = built.train + built.held_out
    other_seed = next(s for s in range(4, 100)
                      if split_cases(cases, s, 0.3) != (built.train, built.held_out))
    other = build_training_set(site, cohort, LABELS, out, study="fed-labels-2", seed=other_seed,
                               held_out_fraction=0.3)
    assert (other.train, other.held_out) == split_cases(cases, other_seed, 0.3)
    assert (other.train, other.held_out) != (built.train, built.held_out)
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == \
        sorted(f"{case}.nii.gz" for case in other.held_out)  # the earlier run's files replaced
