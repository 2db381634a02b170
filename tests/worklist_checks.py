"""Checks of the worklist's lists and revisions that tests/test_worklist.py runs in its own
page loads (kept here so that module stays short): the Decided tab's search, and saving
revisions through the editor's API (numbering, identical saves, dciodvfy, the creator)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import requests
from conftest import dciodvfy
from PIL import Image
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Review
from radflow.web.render import Renderer


def find_decided(page, base: str, review_id: int, who: dict[str, str], shots: Path) -> None:
    """The Decided tab finds a case by accession number, by patient and by reviewer, and
    only matching cases."""
    def search(**fields: str) -> list[str]:
        page.goto(f"{base}/reviews?tab=decided")
        for name, value in fields.items():
            page.fill(f"#search input[name={name}]", value)
        page.click("#search button[type=submit]")
        page.wait_for_load_state("load")
        return [r.get_attribute("data-review") for r in page.locator("#decided tbody tr").all()]

    assert search(accession=who["accession"]) == [str(review_id)]
    page.screenshot(path=str(shots / "worklist-decided.png"), full_page=True)
    assert str(review_id) in search(accession=who["accession"].lower())
    assert str(review_id) in search(patient=who["family"].lower())
    assert str(review_id) in search(patient=who["patient_id"])
    assert str(review_id) in search(reviewer="RADIOLOG")
    assert search(accession="no-such-accession") == []
    assert "No decided case matches" in page.inner_text("#none")
    assert search(reviewer="radiologist", accession=who["accession"]) == [str(review_id)]


def save_revisions(page, http: requests.Session, base: str, site, review: Review, model_seg,
                   tmp_path: Path) -> tuple[str, int]:
    """Through the editor's API: a real edit is stored as revision 1 (dciodvfy: no error, no
    warning; its creator a person name); an identical save stores and logs nothing and says
    so; the same edit again is that revision. Returns its UID and the edited slice."""
    orthanc = site.orthanc_client()
    labels = Renderer(orthanc).labels(model_seg.series_uid, review.source_series_uid).labels
    z = int((labels > 0).reshape(labels.shape[0], -1).sum(1).argmax())
    csrf = page.get_attribute("input[name=csrf]", "value")

    def save(plane) -> requests.Response:
        png = io.BytesIO()
        Image.fromarray(plane.astype(np.uint8)).save(png, format="PNG")
        data = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        return http.post(f"{base}/api/reviews/{review.id}/revisions", timeout=60,
                         json={"corrects": model_seg.series_uid, "slices": {str(z): data}},
                         headers={"X-CSRF-Token": csrf})

    def stored() -> tuple[int, int]:
        with session_scope(site.catalog_url) as session:
            events = len(session.exec(select(AuditEvent).where(
                AuditEvent.subject == f"review:{review.key}")).all())
        return len(orthanc.find_series(StudyInstanceUID=orthanc.series_by_uid(
            review.source_series_uid).study_uid, Modality="SEG")), events

    before = stored()
    answer = save(labels[z])  # not a voxel changed
    assert answer.status_code == 422 and "no voxel changed against" in answer.json()["error"]
    assert stored() == before  # nothing stored, nothing logged
    edited = labels[z].copy()
    edited[edited == edited.max()] = 0  # a segment erased on slice z
    answer = save(edited)
    assert answer.status_code == 200 and answer.json()["revision"] == 1, answer.text
    uid = answer.json()["seg_uid"]
    assert stored() == (before[0] + 1, before[1] + 1)
    again = save(edited)  # the same edit: that revision again, nothing new
    assert again.json() == {**answer.json(), "existing": True} and stored()[0] == before[0] + 1
    found = orthanc.series_by_uid(uid)
    path = tmp_path / "revision.dcm"
    path.write_bytes(orthanc.instance_file(orthanc.series_instances(found.orthanc_id)[0]))
    assert dciodvfy(path) == ([], [])  # no error, no warning
    assert str(Renderer(orthanc).seg_dataset(uid).ContentCreatorName) == "Radiologist^Demo"
    return uid, z


def decided_on_revision(page, base: str, review_id: int, series_uid: str, revision_uid: str,
                        model) -> None:
    """A case decided as corrected opens on the revision it took; the case page, the results
    in Explore and the correction's result name it the same way: revision 1 of the model's."""
    name = f"revision 1 of {model.algorithm} {model.version}"
    page.goto(f"{base}/reviews/{review_id}")
    assert "strong" in page.get_attribute(f"a[data-seg='{revision_uid}']", "class")
    closed = page.inner_text("#closed")
    assert "corrected" in closed and f"revision: {name}" in closed
    page.goto(f"{base}/series/{series_uid}")
    assert name in page.inner_text("#results")
