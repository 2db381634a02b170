"""The clinicians' worklist in a real browser (Debian's chromium, headless, driven by
Playwright): log-in through the embedded OpenID provider's own login page (canaille), My
reviews, the case page, the editor, and decisions that resume the suspended case runs. Then the
security of every route, with the same log-ins.

Screenshots go to $RADFLOW_SCREENSHOTS (the clinician's guide's are made with
``RADFLOW_SCREENSHOTS=docs/images``), else to the test's temporary folder.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import send, wait_settled, watch_csp
from sqlmodel import col, select
from test_review import corrected_seg, results, start_review
from worklist_checks import find_decided, save_revisions

from radflow.catalog.db import session_scope
from radflow.catalog.models import Review
from radflow.catalog.models.base import utcnow

pytestmark = [pytest.mark.services, pytest.mark.slow]


IDENTITY: dict[str, dict[str, str]] = {}  # series UID -> the patient's name, ID, accession


@pytest.fixture(scope="module")
def cases(site, tmp_path_factory) -> list:
    """Three cases of their own (decisions stick to a SEG: other tests' cases are decided)."""
    import pydicom

    from radflow.synth import synthesize

    out = tmp_path_factory.mktemp("worklist-cases")
    made = synthesize(out, 3, seed=515, matrix=64)
    for case in made:  # who each case is, as the files say
        ds = pydicom.dcmread(next(case.dicom_dir.rglob("*.dcm")), stop_before_pixels=True)
        IDENTITY[case.series_uid] = {"family": str(ds.PatientName).split("^")[0],
                                     "patient_id": ds.PatientID, "accession": ds.AccessionNumber}
    wait_settled(site)
    send(site, out)
    wait_settled(site)
    orthanc = site.orthanc_client()
    return [orthanc.series_by_uid(case.series_uid) for case in made]


def app_url(site) -> str:
    return f"http://127.0.0.1:{site.config.ports.worklist}"


def password(site, user: str) -> str:
    return site.secrets.demo_users[user].get_secret_value()


def log_in(browser, site, user: str, path: str = "/reviews", shot: Path | None = None):
    """A new browser context logged in as ``user`` through the provider's login page."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    watch_csp(context, app_url(site))
    page = context.new_page()
    page.goto(app_url(site) + path)
    assert page.url.startswith(f"http://127.0.0.1:{site.config.ports.idp}/")  # the provider's
    page.fill("input[name=login]", user)
    page.click("button[type=submit]")
    page.fill("input[name=password]", password(site, user))
    if shot is not None:
        page.screenshot(path=str(shot))
    page.click("button[type=submit]")
    page.wait_for_url(app_url(site) + "/**")
    return page


def cookies(page) -> requests.Session:
    """A requests session with the browser's cookies (to call routes directly)."""
    session = requests.Session()
    for c in page.context.cookies():
        session.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])
    return session


def review_of(site, run_id: str) -> Review:
    with session_scope(site.catalog_url) as session:
        row = session.exec(select(Review).where(Review.flow_run_id == run_id)).one()
        session.expunge(row)
        return row


def open_case(page, site, review_id: int) -> None:
    page.goto(f"{app_url(site)}/reviews")
    page.click(f"tr[data-review='{review_id}'] >> text=Open case")
    page.wait_for_url(f"**/reviews/{review_id}")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => document.getElementById('zlabel').textContent !== ''")


def test_accept_in_the_browser(site, cases, browser, shots) -> None:
    ref = cases[0]
    run_id = start_review(site, ref)
    review = review_of(site, run_id)
    page = log_in(browser, site, "radiologist", shot=shots / "login.png")
    assert page.url == f"{app_url(site)}/reviews"
    row = page.locator(f"tr[data-review='{review.id}']")
    assert "radflow-abdomen-demo" in row.inner_text() and "role:radiologist" in row.inner_text()
    who = IDENTITY[ref.series_uid]  # the patient's ID and the accession number, on the list
    assert who["patient_id"] in row.inner_text() and who["family"] in row.inner_text()
    assert row.locator(".accession").inner_text() == who["accession"]
    page.screenshot(path=str(shots / "worklist.png"), full_page=True)

    open_case(page, site, review.id)
    header = page.inner_text("h1")  # and on the case page
    assert who["patient_id"] in header and who["accession"] in header and who["family"] in header
    segments = page.locator("#segments tbody tr")
    assert segments.count() >= 2
    # the slider and the keyboard move through the slices; a preset re-renders the slice
    before = page.inner_text("#zlabel")
    page.locator("#view").click()  # focus the page, view tool: no edit
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => document.getElementById('zlabel').textContent === "
                           f"'{int(before) + 1}'")
    page.locator("#slice").fill("0")
    page.wait_for_function("() => document.getElementById('zlabel').textContent === '1'")
    page.keyboard.press("ArrowUp")
    page.wait_for_function("() => document.getElementById('zlabel').textContent === '2'")
    page.locator("#slice").fill(str(int(before) - 1))
    page.click("button[data-preset='lung']")
    page.wait_for_load_state("networkidle")
    page.click("button[data-preset='soft tissue']")
    page.locator(".opacity").first.fill("80")
    page.screenshot(path=str(shots / "case-page.png"), full_page=True)

    page.check("input[name=decision][value=accept]")
    page.fill("#comment", "liver and spleen outlined correctly")
    (before,) = results(site, ref.series_uid, "SEG")
    page.click("#decision button[type=submit]")
    page.wait_for_url(f"{app_url(site)}/reviews")
    # decided at once: said so, and no longer listed as open (the run has not resumed yet)
    assert "accept recorded. Decided — the run resumes" in page.inner_text(".flash")
    assert page.locator(f"#worklist tr[data-review='{review.id}']").count() == 0
    assert site.prefect().wait(run_id, timeout=180).ok  # the suspended run completed
    # re-entry: Prefect ran the case flow again from the top, and the segmentation it had made
    # before suspending was returned, not made again (one SEG row, the same one, one in Orthanc)
    segment_runs = requests.post(
        f"{site.prefect_api_url}/task_runs/filter", auth=site.prefect_auth(), timeout=10,
        json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert sum(t["name"].startswith("segment") for t in segment_runs) >= 2
    assert [s.study_orthanc_id for s in site.orthanc_client().find_series(Modality="SEG")
            ].count(ref.study_orthanc_id) == 1  # (a series ref found by id has no study UID)
    (seg,), (sr,) = results(site, ref.series_uid, "SEG"), results(site, ref.series_uid, "SR")
    assert (seg.id, seg.orthanc_id) == (before.id, before.orthanc_id)
    assert (seg.status, seg.status_by) == ("accepted", "radiologist")  # reviewer from the log-in
    assert sr.derived_from_id == seg.id  # its radiomics used the model's SEG
    decided = review_of(site, run_id)
    assert (decided.status, decided.decision, decided.reviewer) == ("decided", "accept",
                                                                   "radiologist")
    find_decided(page, app_url(site), review.id, who, shots)
    # the decided case opens on the SEG it accepted, with the decision, reviewer and comment
    page.click(f"#decided tr[data-review='{review.id}'] >> text=Open case")
    page.wait_for_url(f"**/reviews/{review.id}")
    assert "strong" in page.get_attribute(f"a[data-seg='{seg.series_uid}']", "class")
    closed = page.inner_text("#closed")
    assert "decided — the run applied it" in closed.lower()
    for part in ("accept", "radiologist", "liver and spleen outlined correctly",
                 "model: radflow-abdomen-demo"):
        assert part in closed, part
    assert who["accession"] in page.inner_text("h1")
    page.screenshot(path=str(shots / "case-decided.png"), full_page=True)
    page.context.close()


def test_reject_in_the_browser(site, cases, browser, tmp_path) -> None:
    ref = cases[2]
    run_id = start_review(site, ref)
    review = review_of(site, run_id)
    # a SEG stored from a workstation (3D Slicer) for this series is offered to pick from
    (model_seg,) = results(site, ref.series_uid, "SEG")
    workstation_uid, _, _ = corrected_seg(site.orthanc_client(), ref, model_seg)
    page = log_in(browser, site, "radiologist")
    open_case(page, site, review.id)
    assert page.locator(f"a[data-seg='{workstation_uid}']").inner_text().startswith("workstation")
    assert page.locator(f"#corrected option[value='{workstation_uid}']").count() == 1
    revision_uid, z = save_revisions(page, cookies(page), app_url(site), site, review,
                                     model_seg, tmp_path)
    open_case(page, site, review.id)  # one numbering: revision 1 of the model's SEG, slice z + 1
    model_title = page.locator(f"a[data-seg='{model_seg.series_uid}']").inner_text() \
        .removeprefix("model: ")
    assert page.locator(f"a[data-seg='{revision_uid}']").inner_text() == \
        f"revision: revision 1 of {model_title}"
    assert f"review.revision_saved (revision 1 of {model_title}), slice {z + 1}" in \
        page.inner_text("#history")
    page.check("input[name=decision][value=reject]")
    page.fill("#comment", "motion artefacts")
    page.click("#decision button[type=submit]")
    page.wait_for_url(f"{app_url(site)}/reviews")
    assert site.prefect().wait(run_id, timeout=180).ok
    (seg,) = results(site, ref.series_uid, "SEG")
    assert seg.status == "rejected" and results(site, ref.series_uid, "SR") == []
    # the history on the case page shows the decision
    page.goto(f"{app_url(site)}/reviews/{review.id}")
    history = page.inner_text("#history")
    assert "review.requested" in history and "review.decided: reject" in history
    # a rejected case opens on the model's SEG, the one it rejected
    assert "strong" in page.get_attribute(f"a[data-seg='{model_seg.series_uid}']", "class")
    assert "motion artefacts" in page.inner_text("#closed")
    page.context.close()


# -- security ----------------------------------------------------------------------------------

def routes(site) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, with sample path parameters."""
    from radflow.web.app import app_routes, create_app

    return [(method, path.replace("{review_id}", "1").replace("{z}", "0")
             .replace("{seg_uid}", "1.2.3").replace("{uid}", "1.2.3")
             .replace("{name}", "demo")) for method, path in app_routes(create_app(site))]


PUBLIC = {"/healthz", "/login", "/auth/callback", "/logged-out", "/favicon.ico"}


def test_every_route_needs_a_log_in(site) -> None:
    checked = 0
    for method, path in routes(site):
        if path in PUBLIC:
            continue
        answer = requests.request(method, app_url(site) + path, allow_redirects=False, timeout=10)
        if path.startswith("/api/"):
            assert answer.status_code == 401, (method, path)
        elif method == "GET":
            assert answer.status_code == 303, (method, path)
            assert answer.headers["location"].startswith("/login?next=")
        else:
            assert answer.status_code in (303, 401, 403), (method, path)
        checked += 1
    assert checked >= 7
    # /login itself goes to the provider with PKCE (S256), state and nonce
    to_provider = requests.get(app_url(site) + "/login", allow_redirects=False, timeout=10)
    query = to_provider.headers["location"]
    assert query.startswith(f"http://127.0.0.1:{site.config.ports.idp}/oauth/authorize?")
    for part in ("code_challenge_method=S256", "code_challenge=", "state=", "nonce="):
        assert part in query


def test_roles_csrf_and_cookies(site, cases, browser) -> None:
    with session_scope(site.catalog_url) as session:  # the newest: its series is in Orthanc
        review_id = session.exec(select(Review.id).order_by(col(Review.id).desc())).first()
    if review_id is None:  # run alone: make one
        review_id = review_of(site, start_review(site, cases[0])).id
    steward = log_in(browser, site, "steward", "/")
    http = cookies(steward)
    for method, path in routes(site):
        if path in PUBLIC or path in ("/", "/logout") or path.startswith(("/federation",
                                                                          "/exports")):
            continue  # the steward's own pages (test_federation_e2e, test_export)
        explore = path.startswith(("/explore", "/api/explore", "/cohorts", "/api/cohorts",
                                   "/series"))
        if explore and not (path.endswith(".png") or (method == "POST" and path.endswith("/runs"))):
            continue  # metadata, counts and cohorts are a steward's too (test_explore)
        path = path.replace("/1", f"/{review_id}", 1)
        answer = http.request(method, app_url(site) + path, allow_redirects=False, timeout=10,
                              data={"csrf": "x"})
        assert answer.status_code == 403, (method, path, answer.status_code)
    steward.context.close()

    radiologist = log_in(browser, site, "radiologist")
    flags = {c["name"]: c for c in radiologist.context.cookies()}[f"radflow_{site.name}"]
    for method, path in routes(site):  # and a radiologist is no data steward
        if path.startswith("/federation"):
            answer = cookies(radiologist).request(method, app_url(site) + path, timeout=10,
                                                  allow_redirects=False, data={"csrf": "x"})
            assert answer.status_code == 403, (method, path)
    assert flags["httpOnly"] and flags["sameSite"] == "Lax" and not flags["secure"]  # http
    http = cookies(radiologist)
    # a form without its CSRF token, or with another one: 403
    for data in ({"decision": "accept"}, {"decision": "accept", "csrf": "forged"}):
        answer = http.post(f"{app_url(site)}/reviews/{review_id}/decision", data=data,
                           allow_redirects=False, timeout=10)
        assert answer.status_code == 403
    answer = http.post(f"{app_url(site)}/api/reviews/{review_id}/revisions",
                       json={"corrects": "1.2", "slices": {}}, timeout=10)
    assert answer.status_code == 403
    answer = http.post(f"{app_url(site)}/logout", allow_redirects=False, timeout=10)
    assert answer.status_code == 403
    # input is validated: an unknown slice or window is refused, not rendered
    assert http.get(f"{app_url(site)}/reviews/{review_id}/slices/9999.png",
                    timeout=10).status_code == 404
    assert http.get(f"{app_url(site)}/reviews/{review_id}/slices/0.png?c=1&w=0",
                    timeout=10).status_code == 422
    for path, status in (("slices/coronal/9999.png", 404), ("slices/sideways/0.png", 404),
                         ("slices/sagittal/0.png?c=1&w=0", 422), ("labels/1.2.3.bin", 404)):
        assert http.get(f"{app_url(site)}/reviews/{review_id}/{path}", timeout=10) \
            .status_code == status, path
    # another site's step: no such review here (404), and another site's session means nothing
    assert http.get(f"{app_url(site)}/reviews/999999", timeout=10).status_code == 404
    # a review whose series left Orthanc: a clear 404, not a server error (a review whose
    # result went while its CT stays still shows the CT: that is no test of this)
    with session_scope(site.catalog_url) as session:
        gone = Review(key=f"review-gone-{review_id}", flow_run_id="run-gone",
                      source_series_uid="1.2.826.0.1.3680043.8.498.404", assignee="role:radiologist",
                      due_at=utcnow() + timedelta(hours=1))
        session.add(gone)
        session.flush()
        gone_id = gone.id
    try:
        answer = http.get(f"{app_url(site)}/reviews/{gone_id}", timeout=10)
        assert answer.status_code == 404 and "cannot be shown" in answer.text
    finally:
        with session_scope(site.catalog_url) as session:
            session.delete(session.get(Review, gone_id))
    radiologist.context.close()


def test_logout_goes_through_the_provider(site, browser) -> None:
    page = log_in(browser, site, "radiologist")
    page.click("header button:has-text('Log out')")
    page.wait_for_load_state("networkidle")
    if page.url.startswith(f"http://127.0.0.1:{site.config.ports.idp}/"):
        # the provider asks to confirm the log-out of its own session
        page.click("button:has-text('Log out'), button[value=logout], button[type=submit]")
        page.wait_for_url(f"{app_url(site)}/logged-out")
    assert page.url == f"{app_url(site)}/logged-out"
    page.goto(f"{app_url(site)}/reviews")  # a new log-in is needed, at the provider
    assert page.url.startswith(f"http://127.0.0.1:{site.config.ports.idp}/")
    page.context.close()
