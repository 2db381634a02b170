"""The screenshots of docs/explore.md, taken from a running demo site in Chromium:

    .venv/bin/python scripts/explore-screenshots.py [--site demo] [--out docs/images]

Logs in through the site's embedded provider as `researcher` (dashboard, builder, the demo's
cohort abdomen-ct) and as `radiologist` (a series with its SEG overlaid). It changes nothing
at the site.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

from radflow.cli.common import site_context
from radflow.web.idp import web_url

CHROMIUM = "/usr/bin/chromium"


def log_in(browser, ctx, user: str, path: str):
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    page.goto(web_url(ctx) + path)
    page.fill("input[name=login]", user)
    page.click("button[type=submit]")
    page.fill("input[name=password]", ctx.secrets.demo_users[user].get_secret_value())
    page.click("button[type=submit]")
    page.wait_for_url(web_url(ctx) + "/**")
    return page


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", default="demo")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    ctx = site_context(args.site)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = log_in(browser, ctx, "researcher", "/explore")
        page.click("section[data-facet=modality] a[data-key=CT]")
        page.wait_for_url("**modality=CT*")
        page.screenshot(path=str(args.out / "explore-dashboard.png"), full_page=True)
        page.locator("section[data-facet=manufacturer] a.bar").first.click()
        page.wait_for_url("**manufacturer=*")
        page.click("#to-builder")
        page.wait_for_function("document.getElementById('count').textContent !== '…'")
        page.fill("#name", "ct-one-vendor")
        page.screenshot(path=str(args.out / "explore-cohort-builder.png"), full_page=True)
        page.goto(web_url(ctx) + "/cohorts/abdomen-ct")
        page.screenshot(path=str(args.out / "explore-cohort.png"), full_page=True)
        page.goto(web_url(ctx) + "/explore?modality=CT")
        series = page.get_attribute("#series tbody a", "href")
        page.context.close()
        page = log_in(browser, ctx, "radiologist", series)
        page.wait_for_function("document.getElementById('view').dataset.drawn")
        page.screenshot(path=str(args.out / "explore-series.png"), full_page=False)
        page.context.close()
        browser.close()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
