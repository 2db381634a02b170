"""Volume checks and derived UIDs (pure logic on synthetic DICOM files)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from radflow.errors import DicomInputError
from radflow.imaging import check_volume
from radflow.types import SeriesRef
from radflow.uids import derived_uid


def test_derived_uids_are_deterministic_valid_and_distinct() -> None:
    a = derived_uid("1.2.3", "model", "1.0.0", "seg")
    assert a == derived_uid("1.2.3", "model", "1.0.0", "seg")
    assert a != derived_uid("1.2.3", "model", "1.0.1", "seg")
    assert a.startswith("2.25.") and len(a) <= 64 and a[5:].isdigit()


@pytest.fixture()
def datasets(synth_dir: Path) -> list:
    return [pydicom.dcmread(p) for p in sorted((synth_dir / "case_000" / "dicom").glob("*.dcm"))]


def test_a_regular_series_is_ordered_along_its_normal(datasets) -> None:
    shuffled = datasets[::-1]
    order = check_volume(shuffled, SeriesRef("x", "1.2"), "CT")
    z = [float(shuffled[k].ImagePositionPatient[2]) for k in order]
    assert z == sorted(z) and len(order) == len(datasets)


def test_wrong_modality_and_missing_slices_are_named(datasets) -> None:
    with pytest.raises(DicomInputError, match="is CT, the model expects MR") as info:
        check_volume(datasets, SeriesRef("x", "1.2"), "MR")
    assert "modality=MR" in info.value.fix
    with pytest.raises(DicomInputError, match=r"not a regular volume.*missing"):
        check_volume(datasets[:10] + datasets[11:], SeriesRef("x", "1.2"), "CT")
