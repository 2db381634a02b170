"""Synthetic site profiles: each fixes its vendor, phase, thickness, noise and anatomy, and the
profiles differ as declared (organ HU between phases, slice spacing, noise, organ volumes);
no profile is the mixed set, byte for byte as before profiles existed."""

from __future__ import annotations

import dataclasses
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
from radflow.synth import SITE_PROFILES, get_site_profile, synthesize
from radflow.synth.phantom import LABELS, PHASES

CASES, SEED, MATRIX = 2, 21, 32
DCIODVFY = Path(sys.executable).parent / "dciodvfy"
RADFLOW = str(Path(sys.executable).parent / "radflow")


def read_hu(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def interior(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose six neighbours are in it too (no partial volume)."""
    inner = mask.copy()
    for axis in range(3):
        for step in (1, -1):
            inner &= np.roll(mask, step, axis=axis)
    return inner


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per profile: headers, slice spacing, per-organ HU means, interior noise, volumes."""
    root = tmp_path_factory.mktemp("synth-sites")
    found: dict[str, dict] = {}
    for name in ("a", "b", "c"):
        cases = synthesize(root / name, CASES, seed=SEED, matrix=MATRIX, site_profile=name)
        stats: dict = {"cases": cases, "headers": [], "spacing": [], "noise": [],
                       "manifest": json.loads((root / name / "manifest.json").read_text()),
                       **{organ: {"hu": [], "ml": [], "z": []} for organ in LABELS.values()}}
        for case in cases:
            image = read_hu(case.dicom_dir)
            hu = sitk.GetArrayFromImage(image).astype(float)
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
            voxel_ml = float(np.prod(image.GetSpacing())) / 1000
            z = image.GetOrigin()[2] + image.GetSpacing()[2] * np.arange(hu.shape[0])
            stats["headers"].append(pydicom.dcmread(next(case.dicom_dir.glob("*.dcm")),
                                                    stop_before_pixels=True))
            stats["spacing"].append(image.GetSpacing()[2])
            liver_core = interior(labels == 1)
            stats["noise"].append(float(hu[liver_core].std()))
            for value, organ in LABELS.items():
                mask = labels == value
                stats[organ]["hu"].append(float(hu[mask].mean()))
                stats[organ]["ml"].append(float(mask.sum()) * voxel_ml)
                stats[organ]["z"].append(float((mask.sum(axis=(1, 2)) * z).sum() / mask.sum()))
        found[name] = stats
    return found


def mean(site: dict, organ: str, key: str) -> float:
    return float(np.mean(site[organ][key]))


def test_each_profile_fixes_vendor_phase_and_thickness(sites: dict[str, dict]) -> None:
    for name, site in sites.items():
        profile = SITE_PROFILES[name]
        assert site["manifest"]["site_profile"] == name
        for header, spacing, case in zip(site["headers"], site["spacing"], site["cases"],
                                         strict=True):
            assert header.Manufacturer == profile.vendor.manufacturer
            assert header.ConvolutionKernel == profile.vendor.kernel
            assert header.PixelRepresentation == profile.vendor.pixel_representation
            assert float(header.KVP) == profile.kvp
            assert float(header.SliceThickness) == profile.slice_thickness
            assert spacing == pytest.approx(profile.slice_thickness, abs=1e-4)
            assert ("ContrastBolusAgent" in header) == (profile.phase != "non-contrast")
            assert header.PatientID.startswith(f"RF{name.upper()}")
            assert case.site_profile == name and case.phase == profile.phase
        path = sorted(site["cases"][0].dicom_dir.glob("*.dcm"))[3]
        out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                             check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines()
                  if line.startswith("Error")]
        assert errors == [], f"{path}: {errors}"
    assert {SITE_PROFILES[n].phase for n in sites} == set(PHASES)
    assert len({SITE_PROFILES[n].slice_thickness for n in sites}) == 3
    # one seed at three sites: three different sets of studies
    assert len({case.study_uid for site in sites.values() for case in site["cases"]}) == 3 * CASES


def test_contrast_phases_shift_organ_hu_as_declared(sites: dict[str, dict]) -> None:
    """a is portal-venous, b arterial, c non-contrast (each with its own noise)."""
    pv, art, native = sites["a"], sites["b"], sites["c"]
    assert mean(pv, "liver", "hu") - mean(native, "liver", "hu") > 30  # declared +50
    assert mean(pv, "liver", "hu") - mean(art, "liver", "hu") > 25  # liver late to enhance
    assert mean(art, "spleen", "hu") - mean(native, "spleen", "hu") > 40  # declared +60
    assert mean(art, "kidney", "hu") - mean(native, "kidney", "hu") > 60  # declared +100
    assert mean(art, "kidney", "hu") - mean(pv, "kidney", "hu") > 10  # +100 against +75


def test_noise_levels_differ_as_declared(sites: dict[str, dict]) -> None:
    """Inside the liver (no edges) the spread is the noise: a 10-14, b 20-28, c 24-32 HU."""
    noise = {name: float(np.mean(site["noise"])) for name, site in sites.items()}
    assert noise["a"] < 16 < 18 < noise["b"]
    assert noise["a"] < 16 < 21 < noise["c"]


def test_anatomy_differs_as_declared(sites: dict[str, dict]) -> None:
    """c: heavier habitus and larger organs; b: slimmer, smaller organs, 12 mm lower (deep
    inspiration). The cases draw the same random numbers at every site (one seed), so the
    organs compare case by case."""
    for organ in LABELS.values():
        a, b, c = (np.array(sites[n][organ]["ml"]) for n in "abc")
        assert (c > 1.2 * a).all(), organ
        assert (b < 0.85 * a).all(), organ
    assert mean(sites["b"], "kidney", "z") < mean(sites["a"], "kidney", "z") - 6
    assert mean(sites["c"], "kidney", "z") > mean(sites["a"], "kidney", "z") + 5


def test_a_profile_object_and_unknown_names(tmp_path: Path) -> None:
    thin_a = dataclasses.replace(SITE_PROFILES["a"], name="a2", slice_thickness=2.0)
    (case,) = synthesize(tmp_path / "a2", 1, seed=1, matrix=16, site_profile=thin_a)
    assert case.spacing[2] == 2.0 and case.site_profile == "a2"
    assert get_site_profile(None) is None
    with pytest.raises(ConfigurationError, match="unknown site profile 'z'; known: a, b, c"):
        synthesize(tmp_path / "z", 1, matrix=16, site_profile="z")
    assert not (tmp_path / "z").exists()  # refused before anything was written
    with pytest.raises(ConfigurationError, match="unknown phase 'delayed'"):
        dataclasses.replace(SITE_PROFILES["a"], name="a3", phase="delayed")
    with pytest.raises(ConfigurationError, match="1 to 16 letters or digits"):
        dataclasses.replace(SITE_PROFILES["a"], name="a site")


def test_no_profile_is_the_mixed_set_as_before(tmp_path: Path) -> None:
    """The demo model and the other tests depend on these exact data: pixels, positions, key
    attributes, UIDs and labels of seed 3 as written before site profiles existed (a digest
    of values, not of files, so that a pydicom upgrade does not move it)."""
    h = hashlib.sha256()
    cases = synthesize(tmp_path, 2, seed=3, matrix=32)
    for case in cases:
        for path in sorted(case.dicom_dir.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            h.update(ds.PixelData)
            h.update(str(ds.ImagePositionPatient).encode())
            h.update(f"{ds.Manufacturer}|{ds.SliceThickness}|{ds.PixelSpacing}|"
                     f"{ds.SeriesDescription}|{ds.SOPInstanceUID}".encode())
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
        h.update(np.ascontiguousarray(labels).tobytes())
    assert h.hexdigest() == "723502ba514a7e055574cb1c0be9190f75be1e54c9ed50e54f9091e9c3c962af"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "site_profile" not in manifest and "phase" not in manifest["cases"][0]


def test_cli_writes_a_site_and_refuses_an_unknown_profile(tmp_path: Path) -> None:
    ok = subprocess.run([RADFLOW, "data", "synth", "--cases", "1", "--matrix", "16", "--out",
                         str(tmp_path / "c"), "--site-profile", "c", "--json"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    (case,) = json.loads(ok.stdout)
    assert case["site_profile"] == "c" and case["phase"] == "non-contrast"
    assert case["spacing"][2] == 5.0 and case["manufacturer"] == "TOSHIBA"
    bad = subprocess.run([RADFLOW, "data", "synth", "--out", str(tmp_path / "x"),
                          "--site-profile", "x"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "unknown site profile 'x'; known: a, b, c" in bad.stdout + bad.stderr
    assert not (tmp_path / "x").exists()
