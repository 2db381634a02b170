"""The site's data in a real browser (Debian's chromium, driven by Playwright), logged in
through the embedded provider: the catalog dashboard's facets, the cohort builder (its hash
against the CLI's), import of a shared cohort, a pipeline run started from a cohort, and the
series viewer with its SEG overlays (the model's and a reviewer's revision). Then the rights:
a researcher sees metadata and never pixels, and every image view is audited.

Screenshots go to $RADFLOW_SCREENSHOTS (the guide's are made with
``RADFLOW_SCREENSHOTS=docs/images``), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import shlex
import warnings

import pydicom
import pytest
import requests
from conftest import run_cli, send, wait_settled
from sqlalchemy import text
from sqlmodel import col, select
from test_worklist import app_url, cookies, log_in

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import AuditEvent, Series
from radflow.cohorts.images import DERIVED_MODALITIES

pytestmark = [pytest.mark.services, pytest.mark.slow]
COHORT = "explore-case"


@pytest.fixture(scope="module")
def case(site, tmp_path_factory) -> dict:
    """One synthetic CT of its own, and the filter that selects exactly it at this site."""
    from radflow.synth import synthesize

    out = tmp_path_factory.mktemp("explore-case")
    made = synthesize(out, 1, seed=8088, matrix=64)[0]
    first = pydicom.dcmread(next(made.dicom_dir.glob("*.dcm")), stop_before_pixels=True)
    study_date = f"{first.StudyDate[:4]}-{first.StudyDate[4:6]}-{first.StudyDate[6:]}"
    wait_settled(site)
    send(site, out)
    wait_settled(site)
    with get_engine(site.catalog_url).connect() as connection:  # plain SQL: the reference
        n = connection.execute(text("SELECT count(*) FROM series WHERE modality = 'CT' AND "
                                    "study_date = :d"), {"d": study_date}).scalar()
    assert n == 1, f"another series shares the study date {study_date}: pick another seed"
    return {"series_uid": made.series_uid, "study_date": study_date,
            "manufacturer": made.manufacturer}


def sql_count(site, where: str, **params) -> int:
    with get_engine(site.catalog_url).connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM series WHERE {where}"),
                                  params).scalar()


def total(page) -> int:
    return int(page.inner_text("#total").replace(",", ""))


# image series, written in SQL here (the reference): no derived object (SEG, SR, RTSTRUCT...),
# nothing radflow made
IMAGES = (f"(modality IS NULL OR modality NOT IN ({', '.join(map(repr, DERIVED_MODALITIES))})) "
          "AND (manufacturer IS NULL OR lower(manufacturer) <> 'radflow')")


def bars(page, facet: str) -> dict[str, int]:
    """A facet's bars on the dashboard: bucket key -> count."""
    found = page.locator(f"section[data-facet={facet}] a.bar")
    return {found.nth(k).get_attribute("data-key"):
            int(found.nth(k).locator(".n").inner_text().replace(",", ""))
            for k in range(found.count())}


def test_dashboard_filters_by_clicking_facets(site, case, browser, shots) -> None:
    page = log_in(browser, site, "researcher", "/explore")
    assert page.url == app_url(site) + "/explore"
    assert total(page) == sql_count(site, IMAGES)  # image series: no SEG, no SR
    # click the CT bar of the modality facet
    page.click("section[data-facet=modality] a[data-key=CT]")
    page.wait_for_url("**/explore?modality=CT")
    assert total(page) == sql_count(site, "modality = 'CT'")
    assert total(page) == sql_count(site, f"modality = 'CT' AND {IMAGES}")  # the CT image series
    assert bars(page, "modality")["CT"] == total(page)
    assert "Modality: CT" in page.inner_text("#chips")
    # then the case's study year: the facets combine, the URL holds both
    year = case["study_date"][:4]
    page.click(f"section[data-facet=study_year] a[data-key='{year}']")
    page.wait_for_url(f"**/explore?modality=CT&study_year={year}")
    assert total(page) == sql_count(site, "modality = 'CT' AND study_date BETWEEN :a AND :b",
                                    a=f"{year}-01-01", b=f"{year}-12-31")
    assert not {"SEG", "SR"} & set(bars(page, "modality"))  # derived objects are not counted
    # the modality facet still shows the other modalities' counts for that year (its own
    # filter left out), the CT bar marked as chosen
    assert page.get_attribute("section[data-facet=modality] a[data-key=CT]", "class") \
        .split() == ["bar", "chosen"]
    page.screenshot(path=str(shots / "explore-dashboard.png"), full_page=True)
    # the view is shareable: a new browser context at the same address shows the same count
    shared = log_in(browser, site, "radiologist", page.url.removeprefix(app_url(site)))
    shared.wait_for_url(page.url, timeout=10_000)  # the filters survive the log-in
    assert total(shared) == total(page)
    shared.context.close()
    # removing the modality chip keeps the year
    page.click("#chips span[data-facet=modality] a")
    page.wait_for_url(f"**/explore?study_year={year}")
    assert total(page) == sql_count(site, f"study_date BETWEEN :a AND :b AND {IMAGES}",
                                    a=f"{year}-01-01", b=f"{year}-12-31")
    # a bad filter in the address is named
    answer = cookies(page).get(app_url(site) + "/explore?age=old", timeout=10)
    assert answer.status_code == 422
    assert "the dashboard filter age=&#39;old&#39; is not valid" in answer.text
    page.context.close()


def test_build_and_save_a_cohort_with_the_cli_hash(site, case, browser, shots) -> None:
    page = log_in(browser, site, "researcher", "/cohorts/new")
    # the builder starts with modality eq CT; add the case's study date
    page.wait_for_function("() => document.getElementById('count').textContent !== '…'")
    assert int(page.inner_text("#count").replace(",", "")) == sql_count(site, "modality = 'CT'")
    page.click("#add")
    row = page.locator(".cond").nth(2)
    row.locator("select.field").select_option("study_date")
    row.locator("select.op").select_option("eq")
    row.locator("input.v").fill(case["study_date"])
    page.wait_for_function("() => document.getElementById('count').textContent === '1'")
    # a condition on a field no series here has a value for is named while typing
    page.click("#add")
    extra = page.locator(".cond").nth(3)
    extra.locator("select.field").select_option("field_strength")
    extra.locator("select.op").select_option("gte")
    extra.locator("input.v").fill("1.5")
    page.wait_for_function("() => document.getElementById('empty').textContent.includes"
                           "('field_strength')")
    assert page.inner_text("#count") == "0"
    extra.locator("button").click()
    page.wait_for_function("() => document.getElementById('count').textContent === '1'")
    page.fill("#name", COHORT)
    page.screenshot(path=str(shots / "explore-cohort-builder.png"), full_page=True)
    web_hash = page.inner_text("#hash")
    command = shlex.split(page.inner_text("#cli"))
    assert command[:4] == ["radflow", "cohort", "create", COHORT]
    page.click("#savebutton")
    page.wait_for_url(f"**/cohorts/{COHORT}")
    assert page.inner_text("#hash") == web_hash
    # the CLI makes the same cohort with the same hash
    cli = run_cli("cohort", "create", "explore-cli", *command[4:], "--site", site.name, "--json",
                  check=True)  # the command the page shows
    assert command[4:] == ["-f", "modality=CT", "-f", f"study_date={case['study_date']}"]
    assert json.loads(cli.stdout)["hash"] == web_hash
    shown = run_cli("cohort", "list", "--site", site.name, "--json", check=True).stdout
    assert COHORT in shown and web_hash in shown
    # the download is the canonical definition
    downloaded = cookies(page).get(f"{app_url(site)}/cohorts/{COHORT}/definition.json",
                                   timeout=10)
    assert "attachment" in downloaded.headers["content-disposition"]
    from radflow.cohorts import CohortDefinition

    assert CohortDefinition.parse(downloaded.text).content_hash == web_hash
    # the cohort's series list holds the case
    assert page.locator(f"#series a[href='/series/{case['series_uid']}']").count() == 1
    page.context.close()


def test_import_a_shared_cohort(site, case, browser, tmp_path) -> None:
    page = log_in(browser, site, "researcher", "/cohorts")
    shared = tmp_path / "partner-cohort.json"
    shared.write_text(json.dumps({"version": 1, "where": {"all": [
        {"field": "modality", "op": "eq", "value": "CT"},
        {"field": "manufacturer", "op": "eq", "value": case["manufacturer"]}]}}))
    page.set_input_files("#import input[type=file]", str(shared))
    page.click("#import button[type=submit]")
    page.wait_for_url("**/cohorts/new?definition=*")
    assert "partner-cohort.json" in page.inner_text("#imported")
    fields = page.locator(".cond select.field")
    assert sorted(fields.nth(k).input_value() for k in range(fields.count())) == \
        ["manufacturer", "modality"]
    expected = sql_count(site, "modality = 'CT' AND lower(manufacturer) = :m",
                         m=case["manufacturer"].lower())
    page.wait_for_function(f"() => document.getElementById('count').textContent === '{expected}'")
    # a cohort with fields this radflow does not know names every one of them
    strange = tmp_path / "newer.json"
    strange.write_text(json.dumps({"where": {"all": [
        {"field": "tumour_grade", "op": "eq", "value": "G2"},
        {"field": "modality", "op": "eq", "value": "CT"},
        {"not": {"field": "pet_tracer", "op": "eq", "value": "FDG"}}]}}))
    page.goto(app_url(site) + "/cohorts")
    page.set_input_files("#import input[type=file]", str(strange))
    page.click("#import button[type=submit]")
    body = page.inner_text("main")
    assert "pet_tracer, tumour_grade" in body and "does not know" in body
    page.context.close()


def test_run_from_a_cohort_and_view_the_overlays(site, case, browser, shots) -> None:
    page = log_in(browser, site, "researcher", f"/cohorts/{COHORT}")
    form = {name: page.locator(f"#run input[name={name}]").input_value()
            for name in ("csrf", "run_token")}
    page.click("#run button[type=submit]")
    page.wait_for_url(f"**/cohorts/{COHORT}")
    assert "segment-and-quantify started" in page.inner_text(".flash")
    # the same form sent again (a double click): no second run
    again = cookies(page).post(f"{app_url(site)}/cohorts/{COHORT}/runs", data=form, timeout=30)
    assert again.status_code == 200 and "no second run" in again.text
    runs = site.prefect().flow_runs_tagged(f"cohort:{COHORT}")
    assert len(runs) == 1 and runs[0].parameters["cohort"] == COHORT
    finished = site.prefect().wait(runs[0].id, 600)
    assert finished.ok, finished.message
    # the page's polling shows the end state and the progress from the catalog
    page.wait_for_function("() => document.querySelector('#runrows .state').textContent"
                           ".startsWith('completed')", timeout=30_000)
    assert page.inner_text("#runrows .progress") == "SEG 1/1 · SR 1/1"
    link = page.get_attribute("#runrows a", "href")
    assert link.endswith(f"/runs/flow-run/{runs[0].id}")
    page.context.close()

    # a reviewer's revision of the model's SEG (as the case page's editor saves one)
    from radflow_review.revision import write_revision

    from radflow.web.render import Renderer

    wait_settled(site)
    with session_scope(site.catalog_url) as session:
        seg_uid = session.exec(select(Series.series_uid).where(
            Series.source_series_uid == case["series_uid"], Series.modality == "SEG")).one()
    renderer = Renderer(site.orthanc_client())
    stack = renderer.stack(case["series_uid"])
    labels = renderer.labels(seg_uid, case["series_uid"])
    edited = labels.labels.copy()
    edited[edited == 1] = 0  # the reviewer removed segment 1
    with warnings.catch_warnings():  # highdicom: a one-component person name (as the web app's)
        warnings.simplefilter("ignore")
        revision = write_revision(stack.datasets, labels.dataset, edited,
                                  reviewer="radiologist", revision=1)
    site.orthanc_client().store_dataset(revision)
    wait_settled(site)

    page = log_in(browser, site, "radiologist", f"/series/{case['series_uid']}")
    page.wait_for_function("() => document.getElementById('view').dataset.drawn")
    segs = page.locator("#segs .seg")
    assert segs.count() == 2
    origins = page.inner_text("#segs")
    assert "model:" in origins and "revision:" in origins
    coloured = """() => { const c = document.getElementById('view'), d = c.getContext('2d')
        .getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i+1]) > 8 ||
            Math.abs(d[i+1] - d[i+2]) > 8) n++; return n; }"""
    z = page.evaluate("() => +document.getElementById('slice').value")
    want = int((labels.labels[z] > 0).sum())
    assert want > 0
    shown = page.evaluate(coloured)
    assert abs(shown - want) <= 0.05 * want + 4, (shown, want)  # the model's SEG overlaid
    page.screenshot(path=str(shots / "explore-series.png"), full_page=True)
    # toggle the model's off: the slice is plain grey
    page.locator("#segs .segtoggle").first.uncheck()
    page.wait_for_function(f"() => document.getElementById('view').dataset.drawn === '{z}:'")
    assert page.evaluate(coloured) == 0
    # the revision alone: segment 1 gone
    page.locator("#segs .segtoggle").nth(1).check()
    page.wait_for_function("() => document.getElementById('view').dataset.drawn.includes('.')")
    assert page.evaluate(coloured) == pytest.approx(int((edited[z] > 0).sum()), abs=4 + 0.05 * want)
    # the SR's features as a table (units as people write them), the links for OHIF / Slicer
    assert page.locator("#features tbody tr").count() >= 2
    assert_units(page)
    assert page.inner_text("#dicomweb").endswith(f"/series/{case['series_uid']}")
    # window and level by number
    page.fill("#wc", "-600")
    page.fill("#ww", "1500")
    page.press("#ww", "Enter")
    page.wait_for_function("() => document.querySelector('.presets button.on') && "
                           "document.querySelector('.presets button.on').dataset.preset "
                           "=== 'lung'")
    page.context.close()
    with session_scope(site.catalog_url) as session:
        views = list(session.exec(select(AuditEvent).where(
            AuditEvent.action == "explore.series_viewed",
            AuditEvent.subject == f"series:{case['series_uid']}")))
    assert [v.actor for v in views] == ["radiologist"]  # once per log-in and series


def assert_units(page) -> None:
    """The features table of a series page: volumes in mL, intensities in HU, no exponent."""
    rows = {page.locator("#features tbody tr").nth(k).locator("td").first.inner_text():
            page.locator("#features tbody tr").nth(k)
            for k in range(page.locator("#features tbody tr").count())}
    volume = rows["shape_VoxelVolume"].locator("td")
    assert volume.last.inner_text() == "mL"
    millilitres = float(volume.nth(1).inner_text().replace(",", ""))
    assert 0 < millilitres < 10_000  # an organ of a phantom, not 1.12477e+06 (mm³)
    assert rows["firstorder_Mean"].locator("td").last.inner_text() == "HU"
    table = page.inner_text("#features")
    assert "[hnsf'U]" not in table and "e+" not in table


def test_explore_counts_image_series(site, case, browser, shots) -> None:
    """After the run: the SEG and SR it made are not counted, nor the model's name as a
    scanner; the switch shows them; the series page lists them."""
    page = log_in(browser, site, "researcher", "/explore")
    assert sql_count(site, "modality IN ('SEG', 'SR')") >= 2  # the run made them
    assert total(page) == sql_count(site, IMAGES)
    assert not {"SEG", "SR"} & set(bars(page, "modality"))
    for facet in ("manufacturer", "model"):  # scanners only
        assert not [k for k in bars(page, facet) if k.lower().startswith("radflow")], facet
    scanners = bars(page, "manufacturer")
    # the switch: derived objects counted and listed; the scanner facets stay scanners
    page.click("#derived-switch")
    page.wait_for_url("**/explore?derived=1")
    assert page.get_attribute("#derived-switch", "aria-checked") == "true"
    assert total(page) == sql_count(site, "1 = 1")
    shown = bars(page, "modality")
    assert shown["SEG"] == sql_count(site, "modality = 'SEG'") and shown["SR"] >= 1
    assert bars(page, "manufacturer") == scanners
    page.screenshot(path=str(shots / "explore-derived.png"), full_page=True)
    # two values of one facet: one `in` row in the builder (rows, not JSON only)
    page.goto(app_url(site) + "/explore?modality=CT&modality=MR")
    page.click("#to-builder")
    page.wait_for_url("**/cohorts/new?definition=*")
    rows = page.locator("#conditions .cond")
    assert rows.count() == 1
    assert rows.first.locator("select.field").input_value() == "modality"
    assert rows.first.locator("select.op").input_value() == "in"
    assert rows.first.locator("input.v").input_value() == "CT, MR"
    assert page.is_checked("#images")  # the image-series rule, as a box
    assert page.get_attribute("#advanced", "open") is None
    expected = sql_count(site, f"modality IN ('CT', 'MR') AND {IMAGES}")
    page.wait_for_function(f"() => document.getElementById('count').textContent === "
                           f"'{expected:,}'")
    page.screenshot(path=str(shots / "explore-cohort-in-row.png"), full_page=True)
    # with derived objects: the box is off, SEG joins the row, the count follows
    page.goto(app_url(site) + "/explore?derived=1&modality=CT&modality=SEG")
    page.click("#to-builder")
    page.wait_for_url("**/cohorts/new?definition=*")
    assert page.locator("#conditions .cond input.v").input_value() == "CT, SEG"
    assert not page.is_checked("#images")
    expected = sql_count(site, "modality IN ('CT', 'SEG')")
    page.wait_for_function(f"() => document.getElementById('count').textContent === "
                           f"'{expected:,}'")
    page.context.close()


def test_a_researcher_never_gets_pixels(site, case, browser, shots) -> None:
    page = log_in(browser, site, "researcher", f"/series/{case['series_uid']}")
    assert "Images need a clinical role" in page.inner_text("#no-pixels")
    assert "needs the radiologist or admin role; you have researcher" in \
        page.inner_text("#no-pixels")
    assert page.locator("#view").count() == 0
    # no way to the pixels through Orthanc either: no Explorer or DICOMweb links
    assert page.locator("a[href*='explorer.html']").count() == 0
    assert page.locator("#dicomweb").count() == 0 and "dicom-web" not in page.content()
    # the derived objects made from the series are listed on its page, with their links
    made = {page.locator("#derived tbody tr").nth(k).get_attribute("data-modality")
            for k in range(page.locator("#derived tbody tr").count())}
    assert {"SEG", "SR"} <= made
    assert_units(page)
    page.screenshot(path=str(shots / "explore-series-researcher.png"), full_page=True)
    seg = page.locator("#derived tbody tr[data-modality=SEG] a").first
    seg.click()
    page.wait_for_selector("#derived-from")  # the SEG's page leads back to its source
    assert f"/series/{case['series_uid']}" in page.get_attribute("#derived-from a", "href")
    page.goto(app_url(site) + f"/series/{case['series_uid']}")
    http = cookies(page)
    for path in (f"/series/{case['series_uid']}/slices/0.png",
                 f"/series/{case['series_uid']}/labels/1.2.3/0.png"):
        answer = http.get(app_url(site) + path, timeout=10)
        assert answer.status_code == 403, path
        assert "radiologist or admin" in answer.text
        assert "needs the radiologist or admin role; you have researcher" in answer.text
    # metadata, counts and cohorts are theirs
    assert http.get(app_url(site) + "/api/explore?modality=CT", timeout=10).json()["total"] \
        == sql_count(site, "modality = 'CT'")
    page.context.close()
    with session_scope(site.catalog_url) as session:
        assert session.exec(select(col(AuditEvent.seq)).where(
            AuditEvent.action == "explore.series_viewed",
            AuditEvent.actor == "researcher")).first() is None
    # a steward (no run role) cannot start a pipeline
    steward = log_in(browser, site, "steward", f"/cohorts/{COHORT}")
    assert steward.locator("#run").count() == 0
    assert "needs the researcher, radiologist or admin role; you have data-steward" in \
        steward.inner_text("#no-run")
    token = steward.evaluate("() => document.querySelector('input[name=csrf]').value")
    answer = cookies(steward).post(f"{app_url(site)}/cohorts/{COHORT}/runs",
                                   data={"csrf": token}, allow_redirects=False, timeout=10)
    assert answer.status_code == 403
    steward.context.close()


def test_image_routes_without_log_in(site, case) -> None:
    for path in (f"/series/{case['series_uid']}", f"/series/{case['series_uid']}/slices/0.png",
                 f"/cohorts/{COHORT}", "/explore", f"/cohorts/{COHORT}/definition.json"):
        answer = requests.get(app_url(site) + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    answer = requests.post(app_url(site) + "/api/cohorts/count", json={"definition": {}},
                           timeout=10)
    assert answer.status_code == 401
