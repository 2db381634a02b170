"""segment-and-quantify end to end on synthetic CT in a real Orthanc with the real model:
SEG and SR in Orthanc, valid (dciodvfy), readable (highdicom), accurate (Dice against the ground
truth), SR values equal to a direct pyradiomics call, no duplicates on re-runs, failing cases
reported while the others finish."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import wait_settled
from pydicom.uid import generate_uid
from sqlmodel import func, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult, FeatureValue
from radflow.data.push import push
from radflow.imaging import load_volume
from radflow.site.registration import site_prefect
from radflow.synth import synthesize
from radflow.types import SeriesRef

pytestmark = [pytest.mark.services, pytest.mark.slow]
DCIODVFY = Path(sys.executable).parent / "dciodvfy"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def ct_cases(tmp_path_factory: pytest.TempPathFactory):
    """Three clinical-size-grid (128x128) synthetic CT cases the model has never seen, and one
    with a missing slice."""
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


def run_pipeline(site, **parameters):
    from prefect.deployments import run_deployment

    from radflow.site.artifacts import run_table

    with site_prefect(site):
        run = run_deployment("segment-and-quantify/alpha", timeout=900,
                             parameters={"site": "alpha", **parameters})
    assert run.state.is_completed(), run.state
    rows = run_table(site, str(run.id), "segment-and-quantify")
    return {"rows": rows, "ok": sum(r["status"] == "ok" for r in rows),
            "failed": sum(r["status"] != "ok" for r in rows)}


def counts(orthanc, site) -> tuple:
    with session_scope(site.catalog_url) as session:
        results = session.exec(select(func.count()).select_from(DerivedResult)).one()
        features = session.exec(select(func.count()).select_from(FeatureValue)).one()
    return orthanc.statistics()["CountInstances"], results, features


def test_segment_and_quantify_end_to_end(orthanc, site, ct_cases, cli, tmp_path: Path) -> None:
    cases, gap = ct_cases
    wait_settled(site)
    push([c.dicom_dir for c in cases] + [gap], client=orthanc, host="127.0.0.1",
         port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
    wait_settled(site)
    gap_uid = pydicom.dcmread(next(gap.glob("*.dcm"))).SeriesInstanceUID
    uids = [c.series_uid for c in cases] + [gap_uid]

    result = run_pipeline(site, series_uids=uids)
    by_uid = {r["series_uid"]: r for r in result["rows"]}
    assert result["ok"] == 3 and result["failed"] == 1
    assert by_uid[gap_uid]["status"] == "failed" and "missing" in by_uid[gap_uid]["reason"]

    for case in cases:
        with session_scope(site.catalog_url) as session:
            seg_row = session.exec(select(DerivedResult).where(
                DerivedResult.kind == "SEG", DerivedResult.source_series_uid == case.series_uid)).one()
            sr_row = session.exec(select(DerivedResult).where(
                DerivedResult.kind == "SR", DerivedResult.source_series_uid == case.series_uid)).one()
        seg_bytes = orthanc.instance_file(seg_row.orthanc_id)
        sr_bytes = orthanc.instance_file(sr_row.orthanc_id)
        for name, data in (("seg.dcm", seg_bytes), ("sr.dcm", sr_bytes)):
            (tmp_path / name).write_bytes(data)
            out = subprocess.run([str(DCIODVFY), str(tmp_path / name)], capture_output=True, text=True)
            errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], f"{name} of {case.name}: {errors}"

        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_bytes)))
        labels = {d.segment_label: d for d in (seg.get_segment_description(n)
                                              for n in seg.get_segment_numbers())}
        assert set(labels) == {"liver", "spleen", "kidney"}
        assert labels["liver"].segmented_property_type.value == "10200004"  # SNOMED CT Liver
        assert labels["kidney"].segmented_property_type.value == "64033007"
        algo = labels["liver"].algorithm_identification
        assert algo[0].AlgorithmName == "radflow-abdomen-demo"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == case.series_uid

        volume = load_volume(orthanc, SeriesRef(orthanc.series_by_uid(case.series_uid).orthanc_id,
                                                case.series_uid))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
        source_uids = [ds.SOPInstanceUID for ds in volume.datasets]
        for label, value in (("liver", 1), ("spleen", 2), ("kidney", 3)):
            number = next(n for n in seg.get_segment_numbers()
                          if seg.get_segment_description(n).segment_label == label)
            mask = seg.get_pixels_by_source_instance(source_uids, segment_numbers=[number],
                                                     assert_missing_frames_are_empty=True)[..., 0] > 0
            assert dice(mask, truth == value) >= 0.90, f"{case.name} {label}"

        # the SR's values are what pyradiomics gives for the same image and mask
        from radflow_radiomics.block import RadiomicsParams
        from radflow_radiomics.sr import read_measurements
        from radflow_radiomics.tasks import segment_masks
        from radiomics import featureextractor

        reported = read_measurements(pydicom.dcmread(io.BytesIO(sr_bytes)))
        masks = segment_masks(pydicom.dcmread(io.BytesIO(seg_bytes)), volume)
        extractor = featureextractor.RadiomicsFeatureExtractor(RadiomicsParams().to_pyradiomics())
        for number, (label, mask) in masks.items():
            direct = extractor.execute(volume.image, mask, label=1)
            for feature in ("original_shape_VoxelVolume", "original_firstorder_Mean",
                            "original_glcm_Contrast"):
                assert reported[(label, feature)] == pytest.approx(float(direct[feature]), rel=1e-9)
        assert len(reported) > 100

    before = counts(orthanc, site)
    again = run_pipeline(site, series_uids=uids[:3])
    assert again["ok"] == 3 and counts(orthanc, site) == before  # cached: nothing new
    forced = run_pipeline(site, series_uids=uids[:3], force=True)
    assert forced["ok"] == 3 and counts(orthanc, site) == before  # recomputed: same UIDs, no copies

    csv_path, parquet_path = tmp_path / "features.csv", tmp_path / "features.parquet"
    cli("pipeline", "features", "--site", "alpha", "--out", str(csv_path), check=True)
    cli("pipeline", "features", "--site", "alpha", "--out", str(parquet_path), check=True)
    import pyarrow.parquet as pq

    assert pq.read_table(parquet_path).num_rows == before[2] == len(csv_path.read_text().splitlines()) - 1


def test_the_first_flow_example_runs(orthanc, site, ct_cases, cli) -> None:
    """docs/examples/first_flow.py, as the guide shows it (cached results make it quick)."""
    import importlib.util

    cases, _ = ct_cases
    wait_settled(site)
    if orthanc.find_series(SeriesInstanceUID=cases[0].series_uid) == []:
        push([cases[0].dicom_dir], client=orthanc, host="127.0.0.1",
             port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
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
