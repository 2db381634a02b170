"""The hub's web app as a coordinator reads it, checked in a real browser (the hub and three
sites of tests/test_federation_sites.py): log-in through the hub's provider, a study started in
the form and read there, the statistics study's tables with units and no raw JSON, the admin-only
revocation, and every page refused without a log-in."""

from __future__ import annotations

import json
import time

from playwright.sync_api import Error as PlaywrightError

from radflow.federation.units import count

FEATURES = ["original_firstorder_Mean", "original_shape_VoxelVolume"]
SEGMENTS = ["liver", "spleen"]


def coordinator_page(browser, hub_cli, user: str, path: str = "/studies"):
    """A browser logged in to the hub's web app as ``user``, through the hub's provider."""
    creds = hub_cli("hub", "credentials")
    web = creds["web"]["url"].removesuffix("/studies")
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    page.goto(web + path)
    assert not page.url.startswith(web)  # sent to the provider's log-in page
    page.fill("input[name=login]", user)
    page.click("button[type=submit]")
    page.fill("input[name=password]", creds["web"]["users"][user]["password"])
    page.click("button[type=submit]")
    page.wait_for_url(web + "/**")
    return page, web


def assert_no_raw_json(page) -> None:
    """The page shows tables: every JSON stays behind its closed toggle."""
    assert page.locator("details[open]").count() == 0
    shown = page.inner_text("main")
    assert '{"' not in shown and '"n":' not in shown, shown[:2000]
    assert not any(pre.is_visible() for pre in page.locator("pre").all())


def statistics_page(page, web: str, study: dict, shots) -> None:
    """A feature-statistics study as a coordinator reads it: tables with units, no JSON, the
    sites whose gates suppressed bins named as suppressed, the report the same as the page."""
    page.goto(f"{web}/studies/{study['study']}")
    assert_no_raw_json(page)
    assert "quantile intervals" in page.inner_text("main")  # (its table behind a toggle)
    rows = page.locator("table[data-table='features'] tbody tr").all_inner_texts()
    assert len(rows) == len(FEATURES) * len(SEGMENTS)
    for row in rows:  # each number in the feature's unit, none as 6.48286e+10
        assert (" HU" if "firstorder_Mean" in row else " mL") in row and "e+" not in row, row
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert "policy_violation:min_cohort" in page.inner_text("#sites tr[data-site='epsilon']")
    suppressed = {s["site"] for s in study["sites"] if any(
        None in cell for row in (s.get("release") or {}).get("histograms", []) for cell in row)}
    assert suppressed, "no gate suppressed a bin: the check below would check nothing"
    for name in suppressed:
        assert "suppressed" in page.inner_text(f"#suppressed li[data-site='{name}']")
    page.screenshot(path=str(shots / "hub-study-statistics.png"), full_page=True)
    report = page.context.request.get(f"{web}/studies/{study['study']}/files/report.html").text()
    assert 'data-table="features"' in report and 'id="suppressed"' in report
    assert " mL" in report and "data:image/png;base64," in report


def hub_web_by_browser(browser, shots, hub_cli, hub_home, local: dict) -> None:
    """A coordinator logs in to the hub's web app, starts a study in the form and reads its
    result there; only an admin may revoke a site; without a log-in every page is refused."""
    import requests

    from radflow.hub.home import HubHome
    from radflow.hub.web import hub_host
    from radflow.web.app import app_routes, create_web_app

    page, web = coordinator_page(browser, hub_cli, "coordinator", "/studies/new")
    missing: list[str] = []  # no 404 in the console: the favicon answers, on every page
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    assert page.url == web + "/studies/new"
    # which site can run which flow, before it starts (the sites' reports)
    for name in local:
        cell = page.locator(f"#readiness tr[data-site='{name}'] "
                            "td[data-flow='federated-count-next']")
        if cell.count():  # (published by tests/test_federation_sites.py: needs radflow>=99)
            assert "cannot: needs radflow>=99" in cell.inner_text()
            assert cell.get_attribute("data-can") == "no"
        counted = page.inner_text(f"#readiness tr[data-site='{name}'] "
                                  "td[data-flow='federated-cohort-count']")
        assert counted.startswith("can run it"), counted
    page.screenshot(path=str(shots / "hub-study-new.png"), full_page=True)
    page.fill("#cohort", "modality=CT")
    page.fill("#deadline", "120")
    with page.expect_navigation():
        page.click("#go")
    study_id = page.url.rsplit("/", 1)[1]
    assert len(study_id) == 12 and study_id.isalnum(), page.url  # on the study's page
    # starting (or running already): the study lists its sites and their state at once
    listed = page.locator("#sites tr[data-site]").evaluate_all(
        "rows => rows.map(r => r.dataset.site)")
    assert sorted(listed) == sorted(local), (page.inner_text("#state"), listed)
    if page.inner_text("#state") != "finished":
        page.screenshot(path=str(shots / "hub-study-starting.png"), full_page=True)
    deadline = time.monotonic() + 180
    while page.locator("#state").text_content(timeout=10_000) != "finished":
        assert time.monotonic() < deadline, page.content()[:3000]
        time.sleep(1)
        try:
            page.goto(f"{web}/studies/{study_id}")
        except PlaywrightError as exc:  # its own refresh (every 2 s while it runs) came first
            if "ERR_ABORTED" not in str(exc):
                raise
    page.screenshot(path=str(shots / "hub-study-web.png"), full_page=True)
    shown = hub_cli("study", "show", study_id)
    assert shown["started_by"].startswith("web:")  # who started it: the OIDC subject
    combined = json.loads(page.text_content("pre.combined-json"))  # (behind its toggle)
    assert combined["matching"] == sum(m for _, m in local.values())  # = pooled
    assert_no_raw_json(page)
    for name, (n, matching) in local.items():
        row = page.inner_text(f"#sites tr[data-site='{name}']")
        assert "released" in row and f"matching {count(matching)}" in row and \
            f"n {count(n)}" in row
    chart = page.context.request.get(f"{web}/studies/{study_id}/files/result.png")
    assert chart.ok and chart.body()[:8] == b"\x89PNG\r\n\x1a\n"
    report = page.context.request.get(f"{web}/studies/{study_id}/files/report.html").text()
    assert "data:image/png;base64," in report and "min_cohort 2" in report
    assert page.context.request.get(f"{web}/studies/{study_id}/files/..%2Fhub.db").status == 404
    icon = page.context.request.get(f"{web}/favicon.ico")  # public, like /healthz
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")

    # the analytics study of the other test, as a coordinator reads it
    stats = [r for r in hub_cli("study", "list") if r["flow"] == "federated-feature-statistics"]
    if stats:
        statistics_page(page, web, hub_cli("study", "show", stats[0]["study"]), shots)
    assert not missing, missing

    # a coordinator may not revoke a site (admin only), whatever the form says
    page.goto(web + "/sites")
    assert page.locator("button:has-text('Revoke')").count() == 0
    # the fleet table: each site as its agent reported it, as `radflow hub fleet` prints it
    fleet = {r["site"]: r for r in hub_cli("hub", "fleet")}
    for name in local:
        row = f"#fleet tr[data-site='{name}']"
        assert page.inner_text(f"{row} td.health").startswith(fleet[name]["health"]["state"])
        assert f"radflow {fleet[name]['radflow']}" in page.inner_text(f"{row} td.versions")
        assert "s ago" in page.inner_text(f"{row} td.heard")
    page.screenshot(path=str(shots / "hub-fleet.png"), full_page=True)
    refused = page.context.request.post(f"{web}/sites/epsilon/revoke",
                                        form={"csrf": "anything"})
    assert refused.status == 403 and "admin" in refused.text()
    page.context.close()

    # without a log-in: pages go to the log-in, nothing else answers
    checked = 0
    for method, path in app_routes(create_web_app(hub_host(HubHome.of(hub_home)))):
        if path in {"/healthz", "/login", "/auth/callback", "/logged-out", "/favicon.ico"}:
            continue
        path = path.replace("{study_id}", study_id).replace("{name}", "epsilon")
        answer = requests.request(method, web + path, allow_redirects=False, timeout=10)
        assert answer.status_code in ((303,) if method == "GET" else (303, 401, 403)), path
        if method == "GET":
            assert answer.headers["location"].startswith("/login?next=")
        checked += 1
    assert checked >= 7


def training_page(page, web: str, result: dict, shots) -> None:
    """A federated training study as a coordinator reads it: each round with its iteration and
    the bytes each site released, the training table (loss, cases, bytes per round), the loss
    and Dice charts, the site that refused named with its reason, no JSON."""
    page.goto(f"{web}/studies/{result['study']}")
    assert_no_raw_json(page)
    rounds = page.locator("#rounds tbody tr").all_inner_texts()
    assert len(rounds) == len(result["rounds"]), rounds
    assert "(train-1-a2)" in rounds[4] and "bytes" in rounds[4], rounds[4]
    training = page.locator("table[data-table='training'] tbody tr").all_inner_texts()
    assert len(training) == result["combined"]["rounds_trained"], training
    for row in training:
        assert "alpha:" in row and "delta:" in row, row  # the bytes each site released
    charts = page.locator("figure.chart img")
    assert sorted(charts.evaluate_all("els => els.map(e => e.alt)")) == ["dice.png", "loss.png"]
    assert all(charts.evaluate_all("els => els.map(e => e.naturalWidth > 100)"))
    assert "policy_violation:weights" in page.inner_text("#sites tr[data-site='epsilon']")
    page.screenshot(path=str(shots / "hub-study-training.png"), full_page=True)


def schedules_by_browser(browser, shots, hub_cli, slug: str) -> None:
    """A coordinator reads the scheduled studies, pauses one whose first study started, makes
    another in the form and deletes it again."""
    page, web = coordinator_page(browser, hub_cli, "coordinator", "/schedules")
    row = page.locator(f"#schedules tr[data-schedule='{slug}']")
    assert "* * * * *" in page.inner_text(f"#schedules tr[data-schedule='{slug}'] td.when")
    assert page.inner_text(f"#schedules tr[data-schedule='{slug}'] td.state") == "active"
    assert page.locator(f"#schedules tr[data-schedule='{slug}'] td.last a").count() >= 1
    page.screenshot(path=str(shots / "hub-schedules.png"), full_page=True)
    with page.expect_navigation():
        row.locator("button.pause").click()
    assert "paused" in page.inner_text(".flash")
    assert page.inner_text(f"#schedules tr[data-schedule='{slug}'] td.state") == "paused"
    assert page.inner_text(f"#schedules tr[data-schedule='{slug}'] td.next") == "-"
    # another, in the form: Mondays at 02:00 in Berlin; then deleted
    page.fill("#cron", "0 2 * * 1")
    page.fill("#timezone", "Europe/Berlin")
    page.fill("#cohort", "modality=CT")
    with page.expect_navigation():
        page.click("#add")
    assert "Schedule radflow-" in page.inner_text(".flash"), page.inner_text("main")[:2000]
    made = [r for r in hub_cli("study", "schedule", "list") if r["cron"] == "0 2 * * 1"]
    assert len(made) == 1 and made[0]["timezone"] == "Europe/Berlin" and made[0]["active"]
    assert made[0]["created_by"].startswith("web:")
    page.fill("#cron", "61 * * * *")  # no such minute: refused with the reason, kept in form
    page.click("#add")
    assert "Not scheduled" in page.inner_text(".flash") and \
        page.input_value("#cron") == "61 * * * *"
    page.goto(web + "/schedules")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator(f"#schedules tr[data-schedule='{made[0]['slug']}'] button.delete").click()
    assert "deleted" in page.inner_text(".flash")
    assert page.locator(f"#schedules tr[data-schedule='{made[0]['slug']}']").count() == 0
    page.context.close()
