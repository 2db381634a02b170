"""segment-and-quantify end to end on synthetic CT in a real Orthanc with the real model:
SEG and SR in Orthanc, valid (dciodvfy: no error, no warning), readable (highdicom, and dcmqi,
which 3D Slicer uses), accurate (Dice against the ground truth), SR values equal to a direct
pyradiomics call under their IBSI codes, no duplicates on re-runs (a forced re-run makes new
objects that supersede the old), failing cases reported while the others finish; the per-case
flow in both isolations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import dciodvfy, send, wait_settled
from pydicom.uid import generate_uid
from sqlmodel import func, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import CohortPin, DerivedResult, FeatureValue
from radflow.imaging import load_volume
from radflow.synth import synthesize
from radflow.types import SeriesRef

pytestmark = [pytest.mark.services, pytest.mark.slow]
BIN = Path(sys.executable).parent


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def ct_cases(tmp_path_factory: pytest.TempPathFactory):
    """Three synthetic CT cases (128x128) the model has never seen, and one with a missing
    slice."""
    out = tmp_path_factory.mktemp("pipeline-cases")
    cases = synthesize(out, 3, seed=3000, matrix=128)
    gap = out / "gap"
    shutil.copytree(cases[2].dicom_dir, gap)
    for path in gap.glob("*.dcm"):  # the same study, but as another series with a hole
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[ds.SeriesInstanceUID, "gap"])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
            generate_uid(entropy_srcs=[ds.SOPInstanceUID, "gap"])
        ds.save_as(path)
    (gap / "IM0012.dcm").unlink()
    return cases, gap


def run_pipeline(site, **parameters) -> dict:
    """segment-and-quantify as a deployment run on the site's worker (as `pipeline run` does)."""
    api = site.prefect()
    run = api.create_flow_run("segment-and-quantify/alpha", {"site": "alpha", **parameters})
    run = api.wait(run.id, timeout=900)
    assert run.ok, (run.state, run.message)
    rows = api.table_artifact(run.id, "segment-and-quantify")
    return {"id": run.id, "rows": rows, "ok": sum(r["status"] == "ok" for r in rows),
            "failed": sum(r["status"] != "ok" for r in rows)}


def counts(orthanc, site) -> tuple:
    with session_scope(site.catalog_url) as session:
        results = session.exec(select(func.count()).select_from(DerivedResult)).one()
        features = session.exec(select(func.count()).select_from(FeatureValue)).one()
    return orthanc.statistics()["CountInstances"], results, features


def result_of(site, kind: str, source_uid: str) -> DerivedResult:
    with session_scope(site.catalog_url) as session:
        return session.exec(select(DerivedResult).where(
            DerivedResult.kind == kind, DerivedResult.source_series_uid == source_uid)).one()


def check_with_dcmqi(seg_path: Path, sr_path: Path, masks: dict, volume, reported: dict,
                     tmp: Path) -> None:
    """dcmqi (what 3D Slicer's QuantitativeReporting uses) reads the SEG into the same masks
    and the SR into the same values under the same codes."""
    out = tmp / "dcmqi"
    out.mkdir(exist_ok=True)
    subprocess.run([str(BIN / "segimage2itkimage"), "--inputDICOM", str(seg_path),
                    "--outputDirectory", str(out), "--prefix", "seg"], check=True,
                   capture_output=True)
    meta = json.loads((out / "seg-meta.json").read_text())
    for index, group in enumerate(meta["segmentAttributes"], start=1):  # one file per group
        image = sitk.GetArrayFromImage(sitk.Resample(
            sitk.ReadImage(str(out / f"seg-{index}.nrrd")), volume.image, sitk.Transform(),
            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
        for attrs in group:
            label = attrs["SegmentLabel"]
            assert attrs["recommendedDisplayRGBValue"] != [128, 174, 128]  # not dcmqi's default
            theirs = image == attrs["labelID"]
            ours = next(sitk.GetArrayFromImage(m) > 0 for lab, m in masks.values() if lab == label)
            assert dice(theirs, ours) >= 0.99, label
    subprocess.run([str(BIN / "tid1500reader"), "--inputDICOM", str(sr_path), "--outputMetadata",
                    str(out / "sr.json")], check=True, capture_output=True)
    sr = json.loads((out / "sr.json").read_text())
    read = {}
    for group in sr["Measurements"]:
        label = group["TrackingIdentifier"].removesuffix(" radiomics")
        for item in group["measurementItems"]:
            quantity = item["quantity"]
            read[(label, f"{quantity['CodingSchemeDesignator']}:{quantity['CodeValue']}")] = \
                float(item["value"])
    assert read.keys() == reported.keys()
    for key, value in reported.items():
        assert read[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_segment_and_quantify_end_to_end(orthanc, site, ct_cases, cli, tmp_path: Path) -> None:
    cases, gap = ct_cases
    wait_settled(site)
    send(site, *[c.dicom_dir for c in cases], gap)
    wait_settled(site)
    gap_uid = pydicom.dcmread(next(gap.glob("*.dcm"))).SeriesInstanceUID
    uids = [c.series_uid for c in cases] + [gap_uid]

    result = run_pipeline(site, series_uids=uids)
    by_uid = {r["series_uid"]: r for r in result["rows"]}
    assert result["ok"] == 3 and result["failed"] == 1
    assert by_uid[gap_uid]["status"] == "failed" and "missing" in by_uid[gap_uid]["reason"]
    with session_scope(site.catalog_url) as session:  # the run pinned what it selected
        pin = session.get(CohortPin, result["id"])
        assert pin is not None and len(json.loads(pin.series)) == 4

    from radiomics import featureextractor

    from radflow_radiomics.block import RadiomicsParams
    from radflow_radiomics.features import feature_code
    from radflow_radiomics.sr import read_measurements
    from radflow_radiomics.tasks import segment_masks

    for index, case in enumerate(cases):
        seg_row = result_of(site, "SEG", case.series_uid)
        sr_row = result_of(site, "SR", case.series_uid)
        assert sr_row.derived_from_id == seg_row.id and seg_row.status == "draft"
        seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
        seg_path.write_bytes(orthanc.instance_file(seg_row.orthanc_id))
        sr_path.write_bytes(orthanc.instance_file(sr_row.orthanc_id))
        for path in (seg_path, sr_path):
            errors, warnings = dciodvfy(path)
            assert (errors, warnings) == ([], []), f"{path.name} of {case.name}"
        if index == 2:
            continue  # every object is valid; the readers' checks below run on two cases

        seg_ds = pydicom.dcmread(seg_path)
        seg = hd.seg.Segmentation.from_dataset(seg_ds)
        labels = {d.segment_label: d for d in (seg.get_segment_description(n)
                                              for n in seg.get_segment_numbers())}
        assert set(labels) == {"liver", "spleen", "kidney"}
        assert labels["liver"].segmented_property_type.value == "10200004"  # SNOMED CT Liver
        assert labels["kidney"].segmented_property_type.value == "64033007"
        assert labels["liver"].algorithm_identification[0].AlgorithmName == "radflow-abdomen-demo"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == case.series_uid
        colours = {tuple(d.RecommendedDisplayCIELabValue) for d in seg_ds.SegmentSequence}
        assert len(colours) == 3

        volume = load_volume(orthanc, SeriesRef(orthanc.series_by_uid(case.series_uid).orthanc_id,
                                                case.series_uid))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
        masks = segment_masks(seg_ds, volume)
        for label, value in (("liver", 1), ("spleen", 2), ("kidney", 3)):
            mask = next(sitk.GetArrayFromImage(m) > 0 for lab, m in masks.values() if lab == label)
            assert dice(mask, truth == value) >= 0.90, f"{case.name} {label}"

        # the SR's values are what pyradiomics gives for the same image and mask, IBSI-coded
        reported = read_measurements(pydicom.dcmread(sr_path))
        extractor = featureextractor.RadiomicsFeatureExtractor(RadiomicsParams().to_pyradiomics())
        for _number, (label, mask) in masks.items():
            direct = extractor.execute(volume.image, mask, label=1)
            for feature in ("original_shape_VoxelVolume", "original_firstorder_Mean",
                            "original_glcm_Contrast", "original_firstorder_Kurtosis"):
                code = feature_code(feature)
                assert reported[(label, code.label)] == pytest.approx(
                    float(direct[feature]) + code.offset, rel=1e-9)
        assert len(reported) > 150 and all(k[1].startswith("IBSI:") for k in reported)
        check_with_dcmqi(seg_path, sr_path, masks, volume, reported, tmp_path)

    before = counts(orthanc, site)
    again = run_pipeline(site, series_uids=uids[:3])
    assert again["ok"] == 3 and counts(orthanc, site) == before  # cached: nothing new
    assert all(r["cached"] for r in again["rows"])
    forced = run_pipeline(site, series_uids=uids[:3], force=True, isolation="runs")
    assert forced["ok"] == 3 and not any(r["cached"] for r in forced["rows"])
    # recomputed: a new SEG and SR per case (new UIDs) beside the old ones, which are superseded
    after = counts(orthanc, site)
    assert after[:2] == (before[0] + 6, before[1] + 6) and after[2] == 2 * before[2]
    for case in cases:
        with session_scope(site.catalog_url) as session:
            old, seg = session.exec(select(DerivedResult).where(
                DerivedResult.kind == "SEG", DerivedResult.source_series_uid == case.series_uid)
                .order_by(DerivedResult.id)).all()
        assert (seg.status, seg.parent_id, old.status) == ("draft", old.id, "superseded")
        assert old.status_reason == f"recomputed by force as result {seg.id}"

    csv_path, parquet_path = tmp_path / "features.csv", tmp_path / "features.parquet"
    cli("pipeline", "features", "--site", "alpha", "--out", str(csv_path), check=True)
    cli("pipeline", "features", "--site", "alpha", "--out", str(parquet_path), check=True)
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_path)  # the current results' values only
    assert table.num_rows == before[2] == len(csv_path.read_text().splitlines()) - 1
    with session_scope(site.catalog_url) as session:
        newest_srs = {max(session.exec(select(DerivedResult.id).where(
            DerivedResult.kind == "SR", DerivedResult.source_series_uid == c.series_uid)).all())
            for c in cases}
    assert set(table.column("result_id").to_pylist()) == newest_srs
    codes = set(table.column("code").to_pylist())
    assert "IBSI:YEKZ" in codes  # VoxelVolume


def test_the_first_flow_example_runs(orthanc, site, ct_cases, cli) -> None:
    """docs/examples/first_flow.py, as the guide shows it (cached results make it quick)."""
    import importlib.util

    from radflow.site.registration import site_prefect

    cases, _ = ct_cases
    wait_settled(site)
    if orthanc.find_series(SeriesInstanceUID=cases[0].series_uid) == []:
        send(site, cases[0].dicom_dir)
        wait_settled(site)
    cli("cohort", "create", "first-flow", "--site", "alpha", "--replace", "-f",
        f"manufacturer={pydicom.dcmread(next(cases[0].dicom_dir.glob('*.dcm'))).Manufacturer}",
        "-f", "modality=CT", check=True)
    path = Path(__file__).parents[1] / "docs" / "examples" / "first_flow.py"
    spec = importlib.util.spec_from_file_location("first_flow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with site_prefect(site):
        volumes = module.liver_volumes("first-flow", "alpha")
    truth = sitk.ReadImage(str(cases[0].labels_path))
    liver_ml = (sitk.GetArrayFromImage(truth) == 1).sum() * np.prod(truth.GetSpacing()) / 1000
    assert volumes[cases[0].series_uid] == pytest.approx(liver_ml, rel=0.1)
