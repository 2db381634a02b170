"""Header parsing and geometry checks (pure logic, Orthanc-style simplified tags)."""

from __future__ import annotations

from datetime import date

import pytest

from radflow.catalog.headers import age_at_study, parse_date, parse_series

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"


def ct_series(n: int = 5, spacing: float = 2.5, **overrides) -> dict[str, dict]:
    base = {
        "PatientID": "P1", "PatientSex": "f", "PatientBirthDate": "19700315", "PatientAge": "054Y",
        "StudyDate": "20240402", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4",
        "Modality": "CT", "SOPClassUID": CT, "BodyPartExamined": "abdomen",
        "Manufacturer": "SIEMENS", "KVP": "120", "SliceThickness": "2.5",
        "PixelSpacing": "0.7\\0.7", "Rows": "512", "Columns": "512",
        "ImageOrientationPatient": "1\\0\\0\\0\\1\\0", "ContrastBolusAgent": "Omnipaque",
        "PixelData": None,
    }
    base.update(overrides)
    return {f"i{k:03d}": {**base, "SOPInstanceUID": f"1.2.3.4.{k}", "InstanceNumber": str(k + 1),
                          "ImagePositionPatient": f"-100\\-100\\{k * spacing}"} for k in range(n)}


def codes(parsed) -> set[str]:
    return {f.code for f in parsed.findings}


def test_a_clean_ct_series() -> None:
    parsed = parse_series("s1", ct_series(), {f"i{k:03d}": ELE for k in range(5)}, "20240402T1")
    s = parsed.series
    assert parsed.findings == [] and parsed.status == "ok"
    assert (s["modality"], s["body_part"], s["manufacturer"]) == ("CT", "ABDOMEN", "SIEMENS")
    assert (s["kvp"], s["slice_thickness"], s["pixel_spacing"]) == (120.0, 2.5, 0.7)
    assert s["num_instances"] == 5 and s["rows"] == 512
    assert s["slice_spacing"] == 2.5 and s["uniform_spacing"] and s["geometry_consistent"]
    assert s["contrast"] and s["patient_sex"] == "F" and s["age_years"] == 54.0
    assert s["study_date"] == date(2024, 4, 2)
    assert [i.position_z for i in parsed.instances] == [0.0, 2.5, 5.0, 7.5, 10.0]


def test_a_missing_slice_is_counted() -> None:
    tags = ct_series(6)
    del tags["i003"]
    parsed = parse_series("s1", tags, {})
    assert parsed.series["missing_slices"] == 1
    assert "missing_slices" in codes(parsed) and parsed.status == "warning"
    assert parsed.series["uniform_spacing"] is False


def test_uneven_spacing_duplicates_and_mixed_orientation() -> None:
    tags = ct_series(5)
    tags["i004"]["ImagePositionPatient"] = "-100\\-100\\10.6"
    assert "non_uniform_spacing" in codes(parse_series("s", tags, {}))
    tags = ct_series(5)
    tags["i004"]["ImagePositionPatient"] = tags["i003"]["ImagePositionPatient"]
    assert "duplicate_positions" in codes(parse_series("s", tags, {}))
    tags = ct_series(5)
    tags["i002"]["ImageOrientationPatient"] = "0\\1\\0\\0\\0\\-1"
    parsed = parse_series("s", tags, {})
    assert "inconsistent_geometry" in codes(parsed) and parsed.status == "error"
    assert parsed.series["geometry_consistent"] is False


def test_missing_geometry_tags_are_errors_not_crashes() -> None:
    tags = ct_series(3)
    for t in tags.values():
        del t["PixelSpacing"]
    parsed = parse_series("s", tags, {})
    assert parsed.status == "error"
    assert any(f.code == "missing_tag" and "PixelSpacing" in f.message for f in parsed.findings)


def test_missing_patient_id_odd_syntax_and_bad_date() -> None:
    tags = ct_series(3, PatientID="", StudyDate="2024-13-45")
    parsed = parse_series("s", tags, {"i000": "1.2.840.10008.1.2.4.201", "i001": ELE})
    assert {"missing_patient_id", "unsupported_transfer_syntax", "bad_value"} <= codes(parsed)
    assert parsed.patient["patient_id"] is None and parsed.series["study_date"] is None


def test_sr_is_cataloged_as_non_image_and_linked_to_its_source() -> None:
    sr = {"i0": {"Modality": "SR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.11",
                 "SOPInstanceUID": "9.9", "SeriesInstanceUID": "9", "StudyInstanceUID": "1.2.3",
                 "PatientID": "P1",
                 "CurrentRequestedProcedureEvidenceSequence": [
                     {"ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3.4"}]}]}}
    parsed = parse_series("sr", sr, {})
    assert codes(parsed) == {"non_image"} and parsed.status == "ok"
    assert parsed.series["source_series_uid"] == "1.2.3.4"
    seg = {"i0": {**sr["i0"], "Modality": "SEG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4",
                  "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3.4"}]}}
    assert parse_series("seg", seg, {}).series["source_series_uid"] == "1.2.3.4"


def test_multiframe_skips_slice_checks() -> None:
    tags = ct_series(1, NumberOfFrames="40")
    assert codes(parse_series("s", tags, {})) == {"multi_frame"}


@pytest.mark.parametrize("age,birth,study,expected", [
    ("054Y", None, None, 54.0), ("006M", None, None, 0.5), ("010W", None, None, 0.19),
    (None, date(1980, 1, 1), date(2020, 1, 1), 40.0), ("bogus", None, None, None),
    (None, date(2020, 1, 1), date(2019, 1, 1), None),
])
def test_age_at_study(age, birth, study, expected) -> None:
    assert age_at_study(age, birth, study) == expected


def test_dates_are_read_tolerantly() -> None:
    assert parse_date("20240131") == date(2024, 1, 31)
    assert parse_date("2024.01.31") == date(2024, 1, 31)
    assert parse_date("20240231") is None and parse_date("") is None and parse_date("abc") is None


def test_unreadable_instances_are_reported_and_the_rest_cataloged() -> None:
    tags = ct_series(6)
    tags["i003"] = {"SOPInstanceUID": "1.2.3.4.3", "InstanceNumber": "4"}  # index tags only
    parsed = parse_series("s", tags, {}, unreadable={"i003": "Bad file format"})
    assert "unreadable_file" in codes(parsed) and parsed.status == "error"
    assert parsed.series["num_instances"] == 6 and parsed.series["modality"] == "CT"
    assert parsed.series["missing_slices"] == 1  # the unreadable slice is a gap in the volume
