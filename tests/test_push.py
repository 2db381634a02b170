"""`radflow data push`: DICOM C-STORE with DCMTK's storescu into the real Orthanc."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import wait_settled
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import IngestRequest, Series, SettlingSeries
from radflow.catalog.sync import compare, request_now
from radflow.data.push import push
from radflow.errors import DicomInputError, OrthancError
from radflow.orthanc.client import series_state

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


def test_a_push_is_cataloged_once_as_orthanc_holds_it(orthanc, site, synth_dir: Path, cli) -> None:
    """`data push` asks for its series to be cataloged as Orthanc holds them, without waiting
    for Orthanc to call them stable. Whoever asks first (the push, or the watcher on Orthanc's
    StableSeries: 2 s at this site), the series in that state is requested and cataloged once.
    (`make demo`, with the default stable age of 10 s, shows the push asking first:
    test_newcomer.)"""
    out = json.loads(cli("data", "push", str(synth_dir / "case_000"), "--site", "alpha",
                         "--json", check=True).stdout)
    (sid,) = out["orthanc_series"]
    assert out["catalog_requested"] in (0, 1)
    wait_settled(site)
    state = series_state(orthanc.resource("series", sid))
    with session_scope(site.catalog_url) as session:
        asked = session.exec(select(IngestRequest.reason, IngestRequest.status).where(
            IngestRequest.series_orthanc_id == sid, IngestRequest.orthanc_state == state)).all()
        row = session.exec(select(Series).where(Series.orthanc_id == sid)).one()
    assert len(asked) == 1 and asked[0][1] == "done", asked
    assert asked[0][0] == ("pushed" if out["catalog_requested"] else "stable")
    assert (row.orthanc_state, row.num_instances) == (state, out["sent"])
    # asking again for the same state adds nothing; a series Orthanc no longer holds neither
    assert request_now(orthanc, site.catalog_url, [sid, "0" * 8 + "-" + "0" * 8]) == 0

    # a series not yet called stable, but cataloged as Orthanc holds it, is in step
    with session_scope(site.catalog_url) as session:
        session.merge(SettlingSeries(series_orthanc_id=sid))
    try:
        in_step, info = compare(orthanc, site.catalog_url)
        assert in_step and info["settling"] == 0, info
    finally:
        with session_scope(site.catalog_url) as session:
            if (settling := session.get(SettlingSeries, sid)) is not None:
                session.delete(settling)


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
