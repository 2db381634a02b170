"""The Orthanc client against a real Orthanc: upload, STOW-RS, find, download, auth, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import requests

from radflow.data.push import is_dicom_file
from radflow.errors import DicomInputError, OrthancError
from radflow.orthanc import OrthancClient

pytestmark = pytest.mark.services
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def test_rest_upload_and_series_download_round_trip(orthanc: OrthancClient, synth_dir: Path,
                                                    tmp_path: Path) -> None:
    files = sorted((synth_dir / "case_000" / "dicom").glob("*.dcm"))
    results = orthanc.upload_files(files)
    assert [r.status for r in results] == ["Success"] * len(files)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    series = orthanc.series_by_uid(series_uid)
    assert series.instance_count == len(files) and series.modality == "CT"

    written = orthanc.download_series(series.orthanc_id, tmp_path / "down")
    assert len(written) == len(files)
    original = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    positions = []
    for path in written:
        back = pydicom.dcmread(path)
        source = original[back.SOPInstanceUID]
        assert np.array_equal(back.pixel_array, source.pixel_array)
        assert back.PatientID == source.PatientID
        positions.append(float(back.ImagePositionPatient[2]))
    assert positions == sorted(positions) or positions == sorted(positions, reverse=True)

    again = orthanc.upload_file(files[0])
    assert again.status == "AlreadyStored"  # storing twice never duplicates
    assert orthanc.series_by_uid(series_uid).instance_count == len(files)


def test_stow_rs_stores_and_find_series_sees_it(orthanc: OrthancClient, synth_dir: Path) -> None:
    files = sorted((synth_dir / "case_001" / "dicom").glob("*.dcm"))[:5]
    stored = orthanc.stow(files)
    assert sorted(stored) == sorted(pydicom.dcmread(f).SOPInstanceUID for f in files)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    found = orthanc.find_series(StudyInstanceUID=study_uid)
    assert len(found) == 1 and found[0].instance_count == 5
    assert orthanc.find_series(Modality="MR") == []


def test_delete_removes_the_series(orthanc: OrthancClient, synth_dir: Path) -> None:
    files = sorted((synth_dir / "case_002" / "dicom").glob("*.dcm"))[:3]
    orthanc.upload_files(files)
    series = orthanc.series_by_uid(pydicom.dcmread(files[0]).SeriesInstanceUID)
    orthanc.delete("series", series.orthanc_id)
    with pytest.raises(OrthancError) as info:
        orthanc.get_series(series.orthanc_id)
    assert info.value.status == 404


def test_authentication_is_enforced(orthanc: OrthancClient, site) -> None:
    anonymous = requests.get(f"{site.orthanc_url}/system", timeout=5)
    assert anonymous.status_code == 401
    assert requests.get(f"{site.orthanc_url}/dicom-web/studies", timeout=5).status_code == 401
    wrong = OrthancClient(site.orthanc_url, "radflow", "not-the-password")
    with pytest.raises(OrthancError) as info:
        wrong.statistics()
    assert info.value.status == 401
    assert "credentials" in info.value.fix
    assert requests.post(f"{site.prefect_api_url}/flows/filter", json={}, timeout=5).status_code == 401


def test_unreachable_orthanc_names_the_url_and_the_fix() -> None:
    client = OrthancClient("http://127.0.0.1:9", "radflow", "x", timeout=2)
    with pytest.raises(OrthancError) as info:
        client.system()
    assert info.value.status is None
    assert "127.0.0.1:9" in str(info.value) and "radflow site up" in info.value.fix


def dcmtk_parses(path: Path) -> bool:
    return subprocess.run(["/usr/bin/dcmdump", "-q", str(path)], capture_output=True,
                          check=False).returncode == 0


def has_uids(path: Path) -> bool:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return all(t in ds for t in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the odd files
def test_pydicom_test_files_upload(orthanc: OrthancClient) -> None:
    """Every valid file (odd transfer syntaxes included) is stored; each invalid one gets a
    DicomInputError with its reason, and does not stop the others."""
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file() and is_dicom_file(p))
    storable = {p for p in files if has_uids(p) and dcmtk_parses(p)}
    assert len(storable) > 120
    results = orthanc.upload_files(files)
    by_path = {r.path: r for r in results}
    for path in files:
        result = by_path[path]
        if path in storable:
            assert result.ok, f"{path.name}: {result.error}"
        else:
            assert result.status == "Failed" and result.error, path.name
    transfer_syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                         for p in storable}
    assert len(transfer_syntaxes) >= 8  # JPEG, JPEG-LS, JPEG 2000, RLE, big endian, deflate...


def test_invalid_upload_raises_dicom_input_error(orthanc: OrthancClient, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes((PYDICOM_FILES / "CT_small.dcm").read_bytes()[:3000])
    with pytest.raises(DicomInputError, match=r"cannot parse|can parse"):
        orthanc.upload_file(truncated)
    with pytest.raises(DicomInputError, match="lacks a tag"):
        orthanc.upload_file(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR")


def test_web_uis_are_reachable_behind_their_log_ins(site) -> None:
    explorer = f"{site.orthanc_url}/app/explorer.html"
    assert requests.get(explorer, timeout=5).status_code == 401
    page = requests.get(explorer, auth=site.orthanc_auth(), timeout=5)
    assert page.status_code == 200 and "<html" in page.text.lower()
    ui = requests.get(site.prefect_url, timeout=5)
    assert ui.status_code == 200 and "<!doctype html>" in ui.text.lower()
