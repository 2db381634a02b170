"""The case page's image area and editor in a real browser (Debian's chromium, headless,
driven by Playwright), on the session site: three linked views on one label volume, the brush
that never paints on the click that makes a view active and never changes another segment,
undo and redo across slices, live volumes, a coronal stroke, the warnings before edits are lost,
the decision form's own validation; then the saved revision SEG read back from Orthanc and the
correction's radiomics.

Screenshots go to $RADFLOW_SCREENSHOTS (``RADFLOW_SCREENSHOTS=docs/images`` for the clinician's
guide), else to the test's temporary folder.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from conftest import dciodvfy, send, wait_settled
from PIL import Image
from sqlmodel import select
from test_review import results, start_review
from test_worklist import app_url, cookies, log_in, review_of
from worklist_checks import decided_on_revision

from radflow.catalog.db import session_scope
from radflow.catalog.models import FeatureValue

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def case(site, tmp_path_factory):
    """A case of its own (a decision sticks to its SEG)."""
    from radflow.synth import synthesize

    out = tmp_path_factory.mktemp("editor-case")
    (made,) = synthesize(out, 1, seed=516, matrix=64)
    wait_settled(site)
    send(site, out)
    wait_settled(site)
    return site.orthanc_client().series_by_uid(made.series_uid)


def by_label(labels) -> dict[str, np.ndarray]:
    """A label map (:class:`radflow.web.render.Labels`) as one mask per segment label."""
    return {s["label"].lower(): labels.labels == s["number"] for s in labels.segments}


def drag(page, canvas: str, start: tuple[float, float], end: tuple[float, float],
         halfway=None) -> None:
    """Press at ``start`` and drag to ``end`` (fractions of the canvas); ``halfway`` is called
    while the button is still down."""
    box = page.locator(canvas).bounding_box()
    (u0, v0), (u1, v1) = start, end
    points = [(box["x"] + box["width"] * (u0 + (u1 - u0) * i / 20),
               box["y"] + box["height"] * (v0 + (v1 - v0) * i / 20)) for i in range(21)]
    page.mouse.move(*points[0])
    page.mouse.down()
    for i, xy in enumerate(points[1:], start=1):
        page.mouse.move(*xy)
        if i == 10 and halfway is not None:
            halfway()
    page.mouse.up()


def test_correct_in_the_editor(site, case, browser, shots, tmp_path) -> None:
    from radflow.web.render import Renderer

    ref = case
    run_id = start_review(site, ref)
    review = review_of(site, run_id)
    (model_seg,) = results(site, ref.series_uid, "SEG")
    orthanc = site.orthanc_client()
    renderer = Renderer(orthanc)
    masks = by_label(renderer.labels(model_seg.series_uid, ref.series_uid))
    voxel_mm3 = float(np.prod(renderer.stack(ref.series_uid).spacing))
    page = log_in(browser, site, "radiologist", f"/reviews/{review.id}")
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.wait_for_function("() => document.getElementById('imaging').dataset.ready === '1'")
    # what the page works on: the SEG as one label volume (gzip), the planes as the server's PNGs
    http, base = cookies(page), f"{app_url(site)}/reviews/{review.id}"
    volume_bin = http.get(f"{base}/labels/{model_seg.series_uid}.bin", timeout=10)
    assert volume_bin.headers["content-encoding"] == "gzip"
    labels = renderer.labels(model_seg.series_uid, ref.series_uid).labels
    assert np.array_equal(np.frombuffer(volume_bin.content, np.uint8).reshape(labels.shape), labels)
    depth, height, width = labels.shape
    for axis, size in (("coronal", (width, depth)), ("sagittal", (height, depth))):
        png = http.get(f"{base}/slices/{axis}/{height // 2}.png", timeout=10)
        assert Image.open(io.BytesIO(png.content)).size == size

    # "Corrected" without a SEG is stopped in the page, next to the field, the comment kept;
    # the server's refusal (a form sent anyway) comes back to the case page with the comment
    page.check("input[name=decision][value=corrected]")
    page.fill("#comment", "spleen drawn too small")
    page.click("#decision button[type=submit]")
    assert "Pick the corrected SEG" in page.inner_text("#corrected-error")
    assert page.url.endswith(f"/reviews/{review.id}")
    assert page.input_value("#comment") == "spleen drawn too small"
    answer = http.post(f"{base}/decision", timeout=10, data={
        "csrf": page.input_value("#decision input[name=csrf]"), "decision": "corrected",
        "corrected_seg_uid": "", "comment": "kept by the server"})
    assert answer.url.endswith(f"/reviews/{review.id}") and answer.status_code == 200
    assert "kept by the server</textarea>" in answer.text and "Corrected needs a" in answer.text

    def voxels(name: str) -> int:
        return int(page.locator("#segments tr", has_text=name).locator(".voxels").inner_text())

    def volume(name: str) -> str:
        return page.locator("#segments tr", has_text=name).locator(".volume").inner_text()

    liver, spleen, spleen_ml = voxels("liver"), voxels("spleen"), volume("spleen")
    assert liver == masks["liver"].sum()
    assert float(spleen_ml.replace(",", "")) == pytest.approx(spleen * voxel_mm3 / 1000,
                                                              rel=0.01, abs=0.006)  # mL
    spleen_n = page.locator("#segment option", has_text="spleen").get_attribute("value")
    a = int(page.inner_text("#zlabel")) - 1  # the slice with the most segmented voxels
    rows = np.nonzero(masks["liver"][a].any(axis=1))[0]
    assert rows.size, f"no liver on slice {a + 1}"
    row = (rows.min() + rows.max() + 1) / 2 / masks["liver"].shape[1]  # across the liver
    page.locator("#view").click()  # view tool: moves the crosshair, makes the view active
    page.keyboard.press("b")
    page.select_option("#segment", spleen_n)
    page.locator("#size").fill("6")
    page.locator("#view-coronal").click()  # the click that makes a view active never paints
    page.locator("#view").click()
    assert page.inner_text("#editstate") == "no edits"

    # spleen painted across the liver: with "overwrite others" off the liver stays as it is;
    # the volume changes while the stroke is still being drawn
    drag(page, "#view", (0.02, row), (0.98, row), halfway=lambda: page.wait_for_function(
        f"() => document.querySelector(\".volume[data-n='{spleen_n}']\").textContent "
        f"!== '{spleen_ml}'"))
    assert voxels("liver") == liver and voxels("spleen") > spleen
    assert "1 slice(s) edited" in page.inner_text("#editstate")
    b = a + 2 if a + 2 < masks["liver"].shape[0] else a - 2
    for _ in range(abs(b - a)):
        page.keyboard.press("ArrowUp" if b > a else "ArrowDown")
    assert page.inner_text("#zlabel") == str(b + 1)
    drag(page, "#view", (0.02, row), (0.98, row))
    assert "2 slice(s) edited" in page.inner_text("#editstate")
    # undo covers every stroke on every slice, and goes back to the stroke's slice
    page.click("#undo")
    page.keyboard.press("Control+z")
    assert page.inner_text("#editstate") == "no edits" and page.inner_text("#zlabel") == str(a + 1)
    assert (voxels("liver"), voxels("spleen")) == (liver, spleen)
    page.click("#redo")
    page.keyboard.press("Control+Shift+z")
    assert "2 slice(s) edited" in page.inner_text("#editstate")
    assert page.inner_text("#zlabel") == str(b + 1)
    # the eraser removes the chosen segment only (the spleen painted over the row), then undone
    painted, kidney = voxels("spleen"), voxels("kidney")
    page.keyboard.press("e")
    drag(page, "#view", (0.02, row), (0.98, row))
    assert voxels("spleen") < painted and (voxels("liver"), voxels("kidney")) == (liver, kidney)
    page.keyboard.press("Control+z")
    page.keyboard.press("b")
    assert voxels("spleen") == painted
    # a stroke in the coronal view, top to bottom, once a click made it the active view
    coronal_row = int(page.input_value("#slice-coronal"))
    page.locator("#view-coronal").click()
    assert "2 slice(s) edited" in page.inner_text("#editstate")
    drag(page, "#view-coronal", (0.5, 0.01), (0.5, 0.99))
    assert int(page.inner_text("#editstate").split()[0]) > 2
    page.locator("#view").click()
    page.locator("#view").hover(position={"x": 60, "y": 90})  # the brush's outline
    page.screenshot(path=str(shots / "editor.png"), full_page=True)
    # unsaved edits: switching the SEG asks first (dismissed: the page stays)
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click(f"a[data-seg='{model_seg.series_uid}']")
    assert asked and "not saved" in asked[0] and "?seg=" not in page.url
    painted = voxels("spleen")

    page.click("#save")
    page.wait_for_url(re.compile(r".*\?seg=2\.25\.\d+&z=\d+$"))
    page.wait_for_function("() => document.getElementById('imaging').dataset.ready === '1'")
    revision_uid = page.url.split("seg=")[1].split("&")[0]
    edited_voxels = voxels("spleen")
    assert edited_voxels == painted

    # the revision: the edits landed in the spleen only, from the axial and coronal strokes
    saved = by_label(Renderer(orthanc).labels(revision_uid, ref.series_uid))
    for name in set(masks) - {"spleen"}:
        assert np.array_equal(saved[name], masks[name]), name
    assert saved["spleen"].sum() == painted and not (masks["spleen"] & ~saved["spleen"]).any()
    added = saved["spleen"] & ~masks["spleen"]
    assert added[a].any() and added[b].any()
    assert added[[z for z in range(added.shape[0]) if z not in (a, b)], coronal_row].any()

    # the revision is in Orthanc, dciodvfy-clean, and references the series and the model's SEG
    found = orthanc.series_by_uid(revision_uid)
    path = tmp_path / "revision.dcm"
    path.write_bytes(orthanc.instance_file(orthanc.series_instances(found.orthanc_id)[0]))
    assert dciodvfy(path) == ([], [])  # no error, no warning (the creator is a person name)
    revision = Renderer(orthanc).seg_dataset(revision_uid)
    assert {s.SeriesInstanceUID for s in revision.ReferencedSeriesSequence} == \
        {ref.series_uid, model_seg.series_uid}
    assert revision.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning \
        .lower() == "liver"

    page.check("input[name=decision][value=corrected]")
    assert page.input_value("#corrected") == revision_uid  # the saved revision, preselected
    page.fill("#comment", "spleen drawn too small")
    page.click("#decision button[type=submit]")
    page.wait_for_url(f"{app_url(site)}/reviews")
    assert site.prefect().wait(run_id, timeout=180).ok
    model, fixed = results(site, ref.series_uid, "SEG")
    (sr,) = results(site, ref.series_uid, "SR")
    assert model.status == "corrected" and fixed.series_uid == revision_uid
    assert sr.derived_from_id == fixed.id  # the radiomics used the clinician's SEG
    with session_scope(site.catalog_url) as session:
        volume = session.exec(select(FeatureValue).where(
            FeatureValue.result_pk == sr.id, FeatureValue.segment_label == "spleen",
            FeatureValue.feature == "original_shape_VoxelVolume")).one().value
    # the feature moved as the edit implies: the edited voxel count, not the model's
    assert volume == pytest.approx(edited_voxels * voxel_mm3, rel=1e-6)
    assert volume > spleen * voxel_mm3
    # the decided case still shows its three views, without the editor
    page.goto(f"{base}?seg={revision_uid}")
    page.wait_for_function("() => document.getElementById('imaging').dataset.ready === '1'")
    assert page.locator("#tools").count() == 0 and voxels("spleen") == edited_voxels
    assert script_errors == []
    decided_on_revision(page, app_url(site), review.id, ref.series_uid, revision_uid, model)
    page.context.close()
