"""De-identification by PS3.15 Annex E (issue 26): a CT with identifiers planted in it, the
SEG drawn on it and the SR measured on both, exported to a folder and checked from outside
the library under test:

- dciodvfy reports no error on any exported file; dcmqi reads the SEG against the CT;
- every reference of the SEG and the SR resolves to an exported UID;
- no attribute of Table E.1-1 keeps an identifying value, the list of attributes taken from
  the standard's table as ``dicom-standard`` parsed it (radflow reads its rules from
  ``dicom-anonymizer``), with the options' columns applied here;
- the planted names, ids, dates and free text are found nowhere in the exported bytes;
- a series that may carry burned-in text is held back, or cleaned by a pixel rule.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import dciodvfy
from pydicom.data import get_testdata_file

from radflow.errors import ConfigurationError
from radflow.export.deidentify import Deidentifier, PixelRule, scrub
from radflow.export.profile import OPTIONS, standard_table
from radflow.export.writer import MANIFEST, write_set
from radflow.synth import LABELS, synthesize_case
from radflow.synth.seg import ground_truth_seg
from radflow.types import FeatureTable
from radflow.uids import derived_uid

BIN = Path(sys.executable).parent
OPTIONS_CHOSEN = ("retain-longitudinal-modified-dates", "retain-patient-characteristics",
                  "clean-descriptors", "clean-structured-content")
PLANTED = {
    "PatientName": "Zyxplant^Janequill^M",
    "PatientID": "MRN5550123",
    "OtherPatientIDs": "OTHERID998",
    "PatientBirthDate": "19610402",
    "AccessionNumber": "ACC7788991",
    "StudyID": "STUDY4242",
    "InstitutionName": "Saint Plantedwood Hospital",
    "ReferringPhysicianName": "Referrowitz^Quentin",
    "OperatorsName": "Operatorsky^Ulla",
    "StudyDescription": "CT abdomen Zyxplant 02.04.1961",
    "SeriesDescription": "Janequill Zyxplant follow-up MRN5550123",
    "ImageComments": "seen by Referrowitz, patient Zyxplant",
    "PatientAddress": "12 Plantedweg, Heidelberg",
}
PRIVATE_TEXT = "Zyxplant private secret"


def planted_strings(study_date: str) -> list[str]:
    words = ["Zyxplant", "Janequill", "MRN5550123", "OTHERID998", "19610402", "ACC7788991",
             "STUDY4242", "Plantedwood", "Referrowitz", "Quentin", "Operatorsky", "02.04.1961",
             "Plantedweg", "private secret", study_date]
    return words


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """One synthetic CT with planted identifiers, its SEG and its SR, as files."""
    from radflow_radiomics.sr import write_sr

    root = tmp_path_factory.mktemp("deid-source")
    case = synthesize_case(root, seed=26, index=0, matrix=64)
    paths = sorted(case.dicom_dir.glob("*.dcm"))
    cts = [pydicom.dcmread(p) for p in paths]
    cts.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    for ds in cts:
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
        block = ds.private_block(0x0029, "PLANTED CREATOR", create=True)
        block.add_new(0x10, "LO", PRIVATE_TEXT)
        block.add_new(0x11, "DS", "42.5")
    ct_dir = root / "ct"
    ct_dir.mkdir()
    for ds in cts:
        ds.save_as(ct_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    cts = [pydicom.dcmread(p) for p in sorted(ct_dir.glob("*.dcm"))]
    cts.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels_path)))
    seg = ground_truth_seg(cts, labels, LABELS)
    seg.save_as(root / "seg.dcm", enforce_file_format=True)
    seg = pydicom.dcmread(root / "seg.dcm")
    rows = [{"source_series_uid": cts[0].SeriesInstanceUID, "segment_number": int(item.SegmentNumber),
             "segment_label": str(item.SegmentLabel), "feature": "original_shape_VoxelVolume",
             "code": "", "value": 1000.0 + int(item.SegmentNumber), "unit": "mm3"}
            for item in seg.SegmentSequence]
    sr = write_sr(cts, seg, FeatureTable(rows=rows), "p1", "3.0.1",
                  series_uid=derived_uid("deid-sr"), instance_uid=derived_uid("deid-sr", "1"),
                  uid=lambda *parts: derived_uid("deid-sr", *parts))
    sr.save_as(root / "sr.dcm", enforce_file_format=True)
    files = [*sorted(ct_dir.glob("*.dcm")), root / "seg.dcm", root / "sr.dcm"]
    return {"files": files, "study_date": str(cts[0].StudyDate), "labels": labels,
            "seg": root / "seg.dcm", "sr": root / "sr.dcm"}


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("deid-out")
    deid = Deidentifier(key=secrets.token_bytes(32), options=OPTIONS_CHOSEN)
    report, manifest = write_set((pydicom.dcmread(p) for p in source["files"]), deid, out,
                                 cohort_hash="c" * 64, project="reader-study")
    files = [out / f["path"] for f in manifest["files"]]
    return {"out": out, "report": report, "manifest": manifest, "files": files,
            "datasets": [pydicom.dcmread(p) for p in files], "deid": deid}


def walk_values(ds, into: dict[int, list]) -> dict[int, list]:
    """Tag -> every value it has anywhere in ``ds`` (nested sequences included)."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                walk_values(item, into)
        elif int(element.tag) >> 16 != 0x7FE0:
            into.setdefault(int(element.tag), []).append(element.value)
    return into


def test_every_file_is_written_and_valid(source, exported) -> None:
    manifest = exported["manifest"]
    assert manifest["instances"] == len(source["files"]) and manifest["held_back"] == []
    assert manifest["options"] == list(OPTIONS_CHOSEN) and manifest["cohort_hash"] == "c" * 64
    assert {f["modality"] for f in manifest["files"]} == {"CT", "SEG", "SR"}
    on_disk = json.loads((exported["out"] / MANIFEST).read_text())
    assert on_disk == manifest
    import hashlib
    for entry, path in zip(manifest["files"], exported["files"], strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    for path in exported["files"]:
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
    for ds in exported["datasets"]:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} >= {
            "113100", "113107", "113108", "113105", "113104"}
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_references_resolve_to_exported_uids(source, exported, tmp_path) -> None:
    by_modality = {}
    for ds in exported["datasets"]:
        by_modality.setdefault(ds.Modality, []).append(ds)
    cts, (seg,), (sr,) = by_modality["CT"], by_modality["SEG"], by_modality["SR"]
    instances = {str(d.SOPInstanceUID) for d in exported["datasets"]}
    series = {str(d.SeriesInstanceUID) for d in exported["datasets"]}
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                 for p in source["files"]}
    assert not instances & originals  # every instance UID remapped
    assert len({str(d.StudyInstanceUID) for d in exported["datasets"]}) == 1
    assert {str(d.FrameOfReferenceUID) for d in (*cts, seg)} == {str(cts[0].FrameOfReferenceUID)}
    for obj in (seg, sr):
        values = walk_values(obj, {})
        referenced = [str(v) for v in values.get(0x00081155, [])]
        assert referenced and set(referenced) <= instances, obj.Modality
        assert {str(v) for v in values.get(0x0020000E, [])} <= series, obj.Modality
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == str(cts[0].SeriesInstanceUID)

    # dcmqi (3D Slicer's converter) reads the exported SEG onto the exported CT's grid
    out = tmp_path / "dcmqi"
    out.mkdir()
    seg_path = next(p for p, d in zip(exported["files"], exported["datasets"], strict=True)
                    if d.Modality == "SEG")
    subprocess.run([str(BIN / "segimage2itkimage"), "--inputDICOM", str(seg_path),
                    "--outputDirectory", str(out), "--prefix", "seg"], check=True,
                   capture_output=True)
    reader = sitk.ImageSeriesReader()
    ct_dir = next(p for p, d in zip(exported["files"], exported["datasets"], strict=True)
                  if d.Modality == "CT").parent
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    ct = reader.Execute()
    meta = json.loads((out / "seg-meta.json").read_text())
    read = np.zeros(sitk.GetArrayFromImage(ct).shape, dtype=np.uint8)
    for index, group in enumerate(meta["segmentAttributes"], start=1):
        image = sitk.GetArrayFromImage(sitk.Resample(
            sitk.ReadImage(str(out / f"seg-{index}.nrrd")), ct, sitk.Transform(),
            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
        for attrs in group:
            read[image == attrs["labelID"]] = attrs["labelID"]
    assert (read > 0).sum() == (source["labels"] > 0).sum()


def test_no_attribute_of_the_standards_table_keeps_an_identifying_value(source, exported) -> None:
    """Each attribute of Table E.1-1 found anywhere in an exported file is empty, or differs
    from every value it had in the source files, or is one the chosen options keep (K) or
    clean (C; the cleaned text is checked for identifiers by the next test)."""
    table = standard_table()
    columns = {name: column for name, column in OPTIONS.items() if name in OPTIONS_CHOSEN}
    before: dict[int, list] = {}
    for path in source["files"]:
        walk_values(pydicom.dcmread(path), before)
    after: dict[int, list] = {}
    for ds in exported["datasets"]:
        walk_values(ds, after)
    checked = 0
    for key, row in table.items():
        if not re.fullmatch("[0-9a-f]{8}", key) or int(key, 16) not in after:
            continue
        tag = int(key, 16)
        retained = {row.get(column) for column in columns.values()} & {"K", "C"}
        if row["basicProfile"] == "K" or retained:
            continue
        old = {str(v) for v in before.get(tag, []) if str(v)}
        kept = [v for v in after[tag] if str(v) and str(v) in old]
        assert not kept, f"{row['name']} {row['tag']} ({row['basicProfile']}) kept {kept[:3]}"
        checked += 1
    assert checked >= 15  # names, ids, UIDs, descriptions of the CT, SEG and SR were in scope
    # private attributes: gone (none listed as safe)
    for ds in exported["datasets"]:
        assert not [e for e in ds if e.tag.is_private]


def test_planted_identifiers_are_nowhere_in_the_exported_bytes(source, exported) -> None:
    planted = planted_strings(source["study_date"])
    for path in [*exported["files"], exported["out"] / MANIFEST]:
        data = path.read_bytes().lower()
        found = [w for w in planted if w.lower().encode() in data]
        assert not found, f"{path.name}: {found}"
    # the descriptions were cleaned, not dropped: what was not identifying is still there
    ct = next(d for d in exported["datasets"] if d.Modality == "CT")
    assert ct.SeriesDescription == "follow-up" and ct.StudyDescription == "CT abdomen"
    assert ct.PatientName == ct.PatientID and str(ct.PatientID).startswith("RF")
    assert exported["report"].patients == {str(ct.PatientID): PLANTED["PatientID"]}


def test_dates_shift_per_patient_and_pseudonyms_are_stable(source) -> None:
    key = secrets.token_bytes(32)
    first, again = (Deidentifier(key=key, options=OPTIONS_CHOSEN) for _ in range(2))
    other_key = Deidentifier(key=secrets.token_bytes(32), options=OPTIONS_CHOSEN)
    ds = [pydicom.dcmread(source["files"][0]) for _ in range(3)]
    a, b, c = first.apply(ds[0]), again.apply(ds[1]), other_key.apply(ds[2])
    assert (a.PatientID, a.SOPInstanceUID, a.StudyDate) == (b.PatientID, b.SOPInstanceUID, b.StudyDate)
    assert a.PatientID != c.PatientID and a.SOPInstanceUID != c.SOPInstanceUID
    # one offset per patient: the interval between two studies survives the shift
    from datetime import datetime
    original = datetime.strptime(source["study_date"], "%Y%m%d")
    shifted = datetime.strptime(a.StudyDate, "%Y%m%d")
    assert 365 <= (original - shifted).days < 365 + 3650
    later = pydicom.dcmread(source["files"][0])
    later.StudyDate = (original.replace(year=original.year + 1)).strftime("%Y%m%d")
    later.StudyInstanceUID = "1.2.3.4.5"
    later = first.apply(later)
    assert (datetime.strptime(later.StudyDate, "%Y%m%d") - shifted).days in (365, 366)
    # without the longitudinal option, dates are emptied or dummies
    plain = Deidentifier(key=key).apply(pydicom.dcmread(source["files"][0]))
    assert plain.StudyDate == "" and plain.LongitudinalTemporalInformationModified == "REMOVED"
    assert "SeriesDescription" not in plain and "PatientAge" not in plain


def test_a_private_attribute_listed_as_safe_stays(source) -> None:
    deid = Deidentifier(key=secrets.token_bytes(32), safe_private=("0029,PLANTED CREATOR,11",))
    ds = deid.apply(pydicom.dcmread(source["files"][0]))
    block = ds.private_block(0x0029, "PLANTED CREATOR")
    assert block[0x11].value == "42.5" and 0x11 in block and 0x10 not in block
    assert "113111" in {c.CodeValue for c in ds.DeidentificationMethodCodeSequence}
    with pytest.raises(ConfigurationError, match="GROUP,CREATOR,ELEMENT"):
        Deidentifier(key=secrets.token_bytes(32), safe_private=("0028,X,10",))


def test_a_series_that_may_carry_burned_in_text_is_held_back(tmp_path) -> None:
    us = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm"))
    assert "BurnedInAnnotation" not in us
    deid = Deidentifier(key=secrets.token_bytes(32))
    assert "modality US" in deid.hold_reason(us)
    report, manifest = write_set([us], deid, tmp_path / "held")
    assert manifest["instances"] == 0 and manifest["held_back"][0]["modality"] == "US"
    assert manifest["held_back"][0]["series_uid"] != str(us.SeriesInstanceUID)
    assert report.held[str(us.SeriesInstanceUID)].instances == 1
    capture = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    assert "a secondary capture" in deid.hold_reason(capture)
    capture.BurnedInAnnotation = "NO"  # the producer's statement that its pixels are clean
    assert deid.hold_reason(capture) is None
    flagged = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    flagged.BurnedInAnnotation = "YES"
    assert "BurnedInAnnotation is YES" in deid.hold_reason(flagged)

    # a pixel rule that covers the series blanks its boxes, and then it may leave
    rule = PixelRule.parse({"where": {"Modality": "US", "Rows": str(us.Rows)},
                            "boxes": [[0, 0, 40, 20]]})
    cleaner = Deidentifier(key=secrets.token_bytes(32), pixel_rules=(rule,))
    us = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm"))
    assert us.pixel_array[:20, :40].any()
    assert cleaner.hold_reason(us) is None
    report, manifest = write_set([us], cleaner, tmp_path / "cleaned")
    out = pydicom.dcmread(tmp_path / "cleaned" / manifest["files"][0]["path"])
    assert not out.pixel_array[:20, :40].any() and out.pixel_array[20:, 40:].any()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in {c.CodeValue for c in out.DeidentificationMethodCodeSequence}
    with pytest.raises(ConfigurationError, match="x, y, width, height"):
        PixelRule.parse({"where": {"Modality": "US"}, "boxes": [[1, 2]]})


def test_an_sr_is_held_without_the_structured_content_option(source) -> None:
    deid = Deidentifier(key=secrets.token_bytes(32), options=("clean-descriptors",))
    assert "clean-structured-content" in deid.hold_reason(pydicom.dcmread(source["sr"]))
    assert deid.hold_reason(pydicom.dcmread(source["seg"])) is None
    with pytest.raises(ConfigurationError, match="choose from"):
        Deidentifier(key=secrets.token_bytes(32), options=("retain-everything",))


def test_scrub_removes_identifiers_and_date_shapes() -> None:
    known = ["Zyxplant", "MRN5550123"]
    assert scrub("CT of ZYXPLANT on 2021-03-04, MRN5550123 / 123456", known) == "CT of on , /"
    assert scrub("thorax 3.5mm", known) == "thorax 3.5mm"


def test_a_project_and_its_files_export_from_the_command_line(site, cli, source, tmp_path) -> None:
    """`radflow export project create` makes a project and a key only the site's user reads;
    `radflow export files` de-identifies by it into a folder, audited with the manifest's hash;
    bad names, options and folders are refused with the fix."""
    from radflow import audit
    from radflow.export.projects import projects_dir

    name = f"reader-{secrets.token_hex(3)}"
    options = [a for o in OPTIONS_CHOSEN for a in ("--option", o)]
    made = json.loads(cli("export", "project", "create", name, *options, "--purpose",
                          "a reader study", "--site", "alpha", "--json", check=True).stdout)
    assert made["options"] == list(OPTIONS_CHOSEN)
    key = projects_dir(site.paths.root) / f"{name}.key"
    assert key.stat().st_mode & 0o077 == 0 and len(bytes.fromhex(key.read_text().strip())) == 32
    listed = json.loads(cli("export", "project", "list", "--site", "alpha", "--json",
                            check=True).stdout)
    assert name in [p["name"] for p in listed]
    again = cli("export", "project", "create", name, "--site", "alpha")
    assert again.returncode != 0 and "exists already" in again.stderr
    bad = cli("export", "project", "create", "x-" + name, "--option", "keep-names", "--site", "alpha")
    assert bad.returncode != 0 and "choose from" in bad.stderr

    out = tmp_path / "set"
    done = json.loads(cli("export", "files", *map(str, source["files"]), "--project", name,
                          "--out", str(out), "--site", "alpha", "--json", check=True).stdout)
    assert done["instances"] == len(source["files"]) and done["held_back"] == []
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["project"] == name and len(manifest["files"]) == done["instances"]
    import hashlib
    assert hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest() == done["manifest_sha256"]
    events = [e for e in audit.events(site.catalog_url) if e.subject == f"export-project:{name}"]
    assert [e.action for e in events] == ["export.project", "export.files"]
    assert json.loads(events[-1].detail)["manifest_sha256"] == done["manifest_sha256"]
    # the same project gives the same pseudonyms next time; a non-empty folder is refused
    refused = cli("export", "files", str(source["files"][0]), "--project", name, "--out",
                  str(out), "--site", "alpha")
    assert refused.returncode != 0 and "not empty" in refused.stderr
    second = tmp_path / "again"
    cli("export", "files", str(source["files"][0]), "--project", name, "--out", str(second),
        "--site", "alpha", check=True)
    (first_file,) = [f for f in manifest["files"] if f["path"].endswith(
        next(p.name for p in (second).rglob("*.dcm")))]
    assert pydicom.dcmread(out / first_file["path"]).PatientID == \
        pydicom.dcmread(next(second.rglob("*.dcm"))).PatientID
