"""Ingest into the catalog through the real stack: storescu -> Orthanc -> watcher -> Prefect
ingest flow runs -> catalog. The catalog must match Orthanc's own counts exactly."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import requests
from conftest import send, wait_settled
from pydicom.uid import generate_uid
from sqlalchemy import func, update
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import Finding, IngestRequest, Series
from radflow.cohorts import CohortDefinition, columns, count_series

pytestmark = [pytest.mark.services, pytest.mark.slow]
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def findings_of(site, series_uid: str) -> set[str]:
    with session_scope(site.catalog_url) as session:
        series = session.exec(select(Series).where(Series.series_uid == series_uid)).one()
        return {f.code for f in session.exec(select(Finding).where(Finding.series_pk == series.id))}


@pytest.fixture()
def odd_files(synth_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """A series with a missing slice, a file without PatientID, and a file that is no DICOM."""
    gap = tmp_path / "gap"
    shutil.copytree(synth_dir / "case_002" / "dicom", gap)
    (gap / "IM0010.dcm").unlink()
    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    ds = pydicom.dcmread(next((synth_dir / "case_000" / "dicom").glob("*.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del ds.PatientID
    ds.save_as(anonymous / "no-patient-id.dcm")
    (anonymous / "notes.dcm").write_text("not DICOM at all")
    return {"gap": gap, "anonymous": anonymous}


def test_catalog_matches_orthanc_exactly(orthanc, site, synth_dir: Path, odd_files, cli) -> None:
    wait_settled(site)  # the cleanup of the previous test has reached the catalog
    result = send(site, synth_dir / "case_000", synth_dir / "case_001", odd_files["gap"],
                  odd_files["anonymous"], PYDICOM_FILES)
    assert result.sent > 100 and result.failed  # some of pydicom's files are invalid on purpose
    assert any("notes.dcm" in s for s in result.skipped)
    wait_settled(site)

    stats = json.loads(cli("catalog", "stats", "--site", "alpha", "--json", check=True).stdout)
    held = orthanc.statistics()
    assert (stats["patients"], stats["studies"], stats["series"], stats["instances"]) == \
        (held["CountPatients"], held["CountStudies"], held["CountSeries"], held["CountInstances"])
    assert stats["by_modality"]["CT"] >= 4 and "SR" in stats["by_modality"]
    assert "missing_slices" in stats["series_with_finding"]  # a warning: counted
    assert "non_image" not in stats["series_with_finding"]  # information: listed, not counted

    gap_uid = pydicom.dcmread(next(odd_files["gap"].glob("*.dcm"))).SeriesInstanceUID
    assert "missing_slices" in findings_of(site, gap_uid)
    with session_scope(site.catalog_url) as session:
        gap = session.exec(select(Series).where(Series.series_uid == gap_uid)).one()
        assert gap.missing_slices == 1 and gap.status == "warning"
        ct = session.exec(select(Series).where(Series.series_uid == json.loads(
            (synth_dir / "manifest.json").read_text())["cases"][0]["series_uid"])).one()
        first = pydicom.dcmread(sorted((synth_dir / "case_000" / "dicom").glob("*.dcm"))[0])
        assert ct.manufacturer == first.Manufacturer and ct.kvp == float(first.KVP)
        assert ct.slice_thickness == float(first.SliceThickness) and ct.status == "ok"
        assert ct.patient_sex == first.PatientSex and ct.age_years == int(first.PatientAge[:3])
        assert ct.uniform_spacing
        assert ct.num_instances == len(list((synth_dir / "case_000" / "dicom").iterdir()))
        sr = session.exec(select(Series).where(Series.modality == "SR")).all()
        assert sr and all(s.status != "error" for s in sr)
        transfer = {s.transfer_syntax for s in session.exec(select(Series))}
        assert len(transfer) >= 6  # odd transfer syntaxes were cataloged, not dropped
    no_pid = pydicom.dcmread(odd_files["anonymous"] / "no-patient-id.dcm").SeriesInstanceUID
    assert "missing_patient_id" in findings_of(site, no_pid)
    assert "non_image" in {code for s in sr for code in findings_of(site, s.series_uid)}


def test_cohorts_select_the_expected_series(orthanc, site, synth_dir: Path, cli,
                                           tmp_path: Path) -> None:
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    cases = json.loads((synth_dir / "manifest.json").read_text())["cases"]
    headers = {c["series_uid"]: pydicom.dcmread(next((synth_dir / c["dicom_dir"]).glob("*.dcm")))
               for c in cases}

    def uids(*args: str) -> set[str]:
        out = cli("cohort", "series", "--site", "alpha", "--json", *args, check=True)
        return {row["series_uid"] for row in json.loads(out.stdout)}

    assert uids("-f", "modality=CT") == set(headers)
    thin = {u for u, h in headers.items() if float(h.SliceThickness) <= 4}
    assert uids("-f", "slice_thickness<=4") == thin
    contrast = {u for u, h in headers.items() if "ContrastBolusAgent" in h}
    assert uids("-f", "contrast=true", "-f", "body_part=abdomen") == contrast
    women = {u for u, h in headers.items() if h.PatientSex == "F"}
    assert uids("--where", json.dumps({"field": "patient_sex", "op": "eq", "value": "f"})) == women
    vendor = headers[cases[0]["series_uid"]].Manufacturer
    assert uids("-f", f"manufacturer~{vendor.lower()[:5]}") == \
        {u for u, h in headers.items() if h.Manufacturer.lower().startswith(vendor.lower()[:5])}

    created = json.loads(cli("cohort", "create", "women", "--site", "alpha", "--json", "-f",
                             "patient_sex=F", check=True).stdout)
    assert created["count"] == len(women)
    shown = json.loads(cli("cohort", "show", "women", "--site", "alpha", "--json", check=True).stdout)
    assert shown["hash"] == created["hash"]
    portable = tmp_path / "women.json"  # what a partner site would receive
    portable.write_text(json.dumps(shown["definition"]))
    again = json.loads(cli("cohort", "count", "--site", "alpha", "--json", "--file",
                           str(portable), check=True).stdout)
    assert again == {"count": len(women), "hash": created["hash"]}


def test_deleting_in_orthanc_removes_from_the_catalog(orthanc, site, synth_dir: Path) -> None:
    wait_settled(site)
    send(site, synth_dir / "case_000", synth_dir / "case_001")
    wait_settled(site)
    victim = orthanc.series_by_uid(pydicom.dcmread(next((synth_dir / "case_001" / "dicom")
                                                         .glob("*.dcm"))).SeriesInstanceUID)
    orthanc.delete("series", victim.orthanc_id)
    info = wait_settled(site)
    assert info["catalog_series"] == 1


def test_each_ingest_run_publishes_a_table_and_a_chart(orthanc, site, synth_dir: Path, cli,
                                                      monkeypatch) -> None:
    wait_settled(site)
    send(site, synth_dir / "case_002")
    wait_settled(site)
    uid = pydicom.dcmread(next((synth_dir / "case_002" / "dicom").glob("*.dcm"))).SeriesInstanceUID
    series_id = orthanc.series_by_uid(uid).orthanc_id
    with session_scope(site.catalog_url) as session:
        run_ids = {r.flow_run_id for r in session.exec(select(IngestRequest).where(
            IngestRequest.series_orthanc_id == series_id)) if r.flow_run_id}
    assert run_ids  # the run that cataloged this series
    api = site.prefect()
    idle = float(os.environ["RADFLOW_INGEST_IDLE_SECONDS"])  # the session's (conftest)
    assert {api.flow_run(run).parameters.get("idle_seconds") for run in run_ids} == {idle}
    deadline = time.monotonic() + 60  # a run reports a few seconds after its burst of work
    while True:
        found = [a for run in run_ids for a in api.artifacts(run)]
        kinds = {(a["key"], a["type"]) for a in found}
        if len(kinds) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ("ingest-series", "table") in kinds and ("catalog-chart", "image") in kinds
    table = next(a for a in found if a["key"] == "ingest-series")
    assert series_id in json.dumps(table["data"])
    chart = next(a for a in found if a["key"] == "catalog-chart")
    assert chart["data"].startswith("data:image/png;base64,")

    # the report also brought the catalog's columnar copy up to date, and cohorts read it
    ct = CohortDefinition.parse({"where": {"field": "modality", "op": "eq", "value": "CT"}})
    deadline = time.monotonic() + 30
    while True:
        with session_scope(site.catalog_url) as session:
            copy = columns.current(session.connection())
            if copy is not None or time.monotonic() > deadline:
                break
        time.sleep(1)
    assert copy is not None, "no current columnar copy after the ingest run reported"
    with session_scope(site.catalog_url) as session:
        in_sql = session.exec(select(func.count()).select_from(Series).where(
            Series.modality == "CT")).one()
        assert copy.count(ct.where) == count_series(session, ct) == in_sql > 0
    optimized = json.loads(cli("catalog", "optimize", "--site", "alpha", "--json", check=True).stdout)
    assert optimized["state"] == "current"
    monkeypatch.setenv("RADFLOW_COLUMNS_FROM", "1000000")  # an admin sets the threshold higher
    with session_scope(site.catalog_url) as session:  # any change makes the copy stale
        session.execute(update(Series).where(Series.id == int(copy.array("id")[0])).values(
            kvp=Series.kvp))
    small = cli("catalog", "optimize", "--site", "alpha", check=True).stdout
    assert "below RADFLOW_COLUMNS_FROM" in small and "--force" in small
    with session_scope(site.catalog_url) as session:
        assert columns.current(session.connection()) is None
        assert count_series(session, ct) == in_sql  # in SQL now
    forced = json.loads(cli("catalog", "optimize", "--site", "alpha", "--force", "--json",
                            check=True).stdout)
    assert forced["state"] == "built" and forced["series"] >= in_sql


def test_a_corrupt_file_in_storage_is_a_finding_not_a_failure(orthanc, site, manager,
                                                              synth_dir: Path) -> None:
    """Orthanc cannot read one of the series' files any more: that instance gets a finding with
    the reason, the others are cataloged."""
    wait_settled(site)
    send(site, synth_dir / "case_001")
    wait_settled(site)
    uid = pydicom.dcmread(next((synth_dir / "case_001" / "dicom").glob("*.dcm"))).SeriesInstanceUID
    series = orthanc.series_by_uid(uid)
    victim = orthanc.series_instances(series.orthanc_id)[3]
    uuid = requests.get(f"{site.orthanc_url}/instances/{victim}/attachments/dicom/info",
                        auth=site.orthanc_auth(), timeout=10).json()["Uuid"]
    stored = site.paths.orthanc_storage / uuid[:2] / uuid[2:4] / uuid
    stored.write_bytes(stored.read_bytes()[:600])  # truncated on disk behind Orthanc's back
    manager.restart("alpha", "orthanc")  # drop Orthanc's in-memory cache of the parsed file
    api = site.prefect()
    run = api.wait(api.create_flow_run("ingest/alpha", {"series_ids": [series.orthanc_id]}).id,
                   timeout=120)
    assert run.ok
    with session_scope(site.catalog_url) as session:
        row = session.exec(select(Series).where(Series.series_uid == uid)).one()
        found = session.exec(select(Finding).where(Finding.series_pk == row.id)).all()
    assert row.num_instances == series.instance_count and row.status == "error"
    unreadable = [f for f in found if f.code == "unreadable_file"]
    assert unreadable and unreadable[0].instance_orthanc_id == victim
    orthanc.delete("instances", victim)  # leave no broken file for the next test
