"""Synthetic CT: valid DICOM, right geometry, labels aligned, deterministic, varied."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radflow.errors import ConfigurationError
from radflow.synth import synthesize
from radflow.synth.phantom import LABELS

DCIODVFY = Path(sys.executable).parent / "dciodvfy"


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.dcm")):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_series_reads_as_volume_with_the_right_geometry(synth_dir: Path) -> None:
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert len(manifest["cases"]) == 3
    for case in manifest["cases"]:
        image = read_series(synth_dir / case["dicom_dir"])
        first = pydicom.dcmread(next((synth_dir / case["dicom_dir"]).glob("*.dcm")))
        px = float(first.PixelSpacing[0])
        assert image.GetSize() == (64, 64, case["slices"])
        assert image.GetSpacing() == pytest.approx((px, px, float(first.SliceThickness)), abs=1e-4)
        assert image.GetSpacing()[2] in (4.0, 5.0)
        labels = sitk.ReadImage(str(synth_dir / case["labels_path"]))
        assert labels.GetSize() == image.GetSize()
        assert labels.GetOrigin() == pytest.approx(image.GetOrigin(), abs=1e-3)
        assert labels.GetSpacing() == pytest.approx(image.GetSpacing(), abs=1e-4)


def test_labels_sit_on_the_organs(synth_dir: Path) -> None:
    """Mean HU inside each label matches its organ; every organ is present."""
    case = synth_dir / "case_000"
    hu = sitk.GetArrayFromImage(read_series(case / "dicom")).astype(float)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "labels.nii.gz")))
    assert set(np.unique(labels)) == {0, *LABELS}
    means = {LABELS[k]: hu[labels == k].mean() for k in LABELS}
    assert 40 < means["liver"] < 110
    assert 30 < means["spleen"] < 80
    assert 120 < means["kidney"] < 200
    assert hu[labels == 0].mean() < 0  # air, fat and the rest


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", 1, seed=3, matrix=32)
    b = synthesize(tmp_path / "b", 1, seed=3, matrix=32)
    c = synthesize(tmp_path / "c", 1, seed=4, matrix=32)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert a[0].series_uid == b[0].series_uid != c[0].series_uid
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_cases_vary_in_what_cohorts_filter_on(tmp_path: Path) -> None:
    written = synthesize(tmp_path, 12, seed=11, matrix=16)
    headers = [pydicom.dcmread(next(c.dicom_dir.glob("*.dcm")), stop_before_pixels=True)
               for c in written]
    assert len({h.Manufacturer for h in headers}) >= 3
    assert len({h.PatientSex for h in headers}) == 2
    assert len({h.SliceThickness for h in headers}) == 2
    assert len({"ContrastBolusAgent" in h for h in headers}) == 2
    assert len({h.StudyInstanceUID for h in headers}) == 12
    assert len({round(float(h.PixelSpacing[0]), 2) for h in headers}) >= 6


def test_files_pass_dciodvfy_without_errors(synth_dir: Path) -> None:
    for case in sorted(synth_dir.glob("case_*")):
        path = sorted((case / "dicom").glob("*.dcm"))[5]
        out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                             check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path}: {errors}"


def test_rejects_impossible_requests(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cases must be at least 1"):
        synthesize(tmp_path, 0)
    with pytest.raises(ConfigurationError, match="matrix"):
        synthesize(tmp_path, 1, matrix=4)
