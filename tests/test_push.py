"""`radflow data push`: DICOM C-STORE with DCMTK's storescu into the real Orthanc."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from radflow.data.push import push
from radflow.errors import DicomInputError, OrthancError

pytestmark = pytest.mark.services


def test_cli_push_sends_every_slice_and_verifies(orthanc, site, synth_dir: Path, cli) -> None:
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    expected = sum(c["slices"] for c in manifest["cases"])
    out = cli("data", "push", str(synth_dir), "--site", "alpha", "--json", check=True)
    result = json.loads(out.stdout)
    assert result["files"] == result["sent"] == expected
    assert result["verified"] is True and result["failed"] == []
    assert len(result["studies"]) == 3
    assert len(result["skipped"]) == 4  # three labels.nii.gz and the manifest
    stats = orthanc.statistics()
    assert stats["CountInstances"] == expected and stats["CountStudies"] == 3
    for case in manifest["cases"]:
        assert orthanc.series_by_uid(case["series_uid"]).instance_count == case["slices"]

    again = json.loads(cli("data", "push", str(synth_dir / "case_000"), "--site", "alpha",
                           "--json", check=True).stdout)
    assert again["sent"] == manifest["cases"][0]["slices"]
    assert orthanc.statistics()["CountInstances"] == expected  # no duplicates


def test_push_of_a_folder_without_dicom_is_refused(orthanc, site, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(DicomInputError, match="no DICOM Part 10 file") as info:
        push([tmp_path], client=orthanc, host="127.0.0.1", port=site.config.ports.orthanc_dicom,
             called_aet=site.config.aet)
    assert "radflow data synth" in info.value.fix


def test_cli_push_error_is_one_line_with_a_fix(site, tmp_path: Path, cli) -> None:
    out = cli("data", "push", str(tmp_path / "missing"), "--site", "alpha")
    assert out.returncode == 1
    assert "no such file or folder" in out.stderr and "fix:" in out.stderr
    assert "Traceback" not in out.stderr


def test_wrong_called_aet_is_refused_clearly(orthanc, site, synth_dir: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synth_dir / "case_000" / "dicom").glob("*.dcm")), one)
    with pytest.raises(OrthancError, match="refused the DICOM association") as info:
        push([one], client=orthanc, host="127.0.0.1", port=site.config.ports.orthanc_dicom,
             called_aet="NOT_THE_SITE")
    assert "AE title" in info.value.fix


def test_unknown_calling_aet_cannot_store(orthanc, site, synth_dir: Path, tmp_path: Path) -> None:
    """Only registered DICOM peers may C-STORE (DicomAlwaysAllowStore is off)."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synth_dir / "case_000" / "dicom").glob("*.dcm")), one)
    with pytest.raises(OrthancError, match="refused the DICOM association"):
        push([one], client=orthanc, host="127.0.0.1", port=site.config.ports.orthanc_dicom,
             called_aet=site.config.aet, calling_aet="STRANGER")
    assert orthanc.statistics()["CountInstances"] == 0
