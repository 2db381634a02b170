"""Data discovery and access requests over the hub and three sites of
tests/test_federation_sites.py: each site's collection summary against its own catalog, rounded
as its policy says; the Discover page in a browser; an access request filed on it, approved on
a site's Federation page and declined on another's command line; a study gated by it, at the
hub and at the site."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import RADFLOW
from federation_checks import audit_actions, poll
from hub_pages import coordinator_page

from radflow.catalog.db import session_scope
from radflow.cohorts.definition import parse_short
from radflow.cohorts.query import count_series
from radflow.federation.policy import SitePolicy, save_policy

FLOW = "federated-cohort-count"
PACKAGE = "federation/flows/federated-cohort-count"


def exact(ctx, where: list[str]) -> int:
    with session_scope(ctx.catalog_url) as session:
        return count_series(session, parse_short(where))


def rounded(n: int, min_count: int, round_to: int) -> int:
    """The stated rule: under min_count left out (0 in a sum), else to the nearest round_to."""
    return 0 if n < min_count else max(round_to, int((n + round_to / 2) // round_to) * round_to)


def run(hub_home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RADFLOW, *args], env={**os.environ, "RADFLOW_HOME": str(hub_home)},
                          capture_output=True, text=True, timeout=300, check=False)


def discovery_and_access(federation, cli, tmp_path, browser, shots) -> None:
    from test_worklist import app_url, log_in

    hub_cli, sites, hub_home = federation["hub_cli"], federation["sites"], federation["hub_home"]
    version = hub_cli("publish", PACKAGE)["hash"]
    cohort_file = tmp_path / "ct.json"
    cohort_file.write_text(parse_short(["modality=CT"]).canonical_json())
    base = {"approved": [version], "job_mode": "auto", "min_cohort": 2, "min_cell": 2}
    save_policy(sites["alpha"].paths.root, SitePolicy(**base, discovery="count",
                                                      discovery_min_count=2,
                                                      discovery_round_to=5))
    save_policy(sites["epsilon"].paths.root, SitePolicy(**base, discovery="boolean",
                                                        discovery_min_count=1,
                                                        require_access_request=True))
    save_policy(sites["delta"].paths.root, SitePolicy(**base))
    cli("site", "policy", "set", "discovery=count", "discovery_min_count=1",
        "discovery_round_to=1", "--site", "delta", check=True)  # the steward's command

    def answered(*where: str) -> dict:
        return hub_cli("discover", *[a for w in where for a in ("--where", w)])

    # each agent publishes within a poll of its policy's change
    poll(lambda: {s: a["rule"] for s, a in answered()["sites"].items()} == {
        "alpha": "counts under 2 left out, the others rounded to the nearest 5",
        "delta": "counts under 1 left out, the others rounded to the nearest 1",
        "epsilon": "yes/no only; yes means at least 1 series"}, 90, "three summaries")
    for where in (["modality=CT"], ["modality=CT", "patient_sex=F"], ["body_part=ABDOMEN"]):
        said = answered(*where)
        counts = {name: exact(ctx, where) for name, ctx in sites.items()}
        assert said["sites"]["delta"]["count"] == counts["delta"], (where, said)
        assert said["sites"]["alpha"]["count"] == rounded(counts["alpha"], 2, 5), (where, said)
        assert said["sites"]["epsilon"]["exists"] == (counts["epsilon"] >= 1), (where, said)
        assert said["total"] == said["sites"]["alpha"]["count"] + counts["delta"]
        assert said["sites_counted"] == 2
    assert counts["delta"] > 0 and counts["alpha"] >= 2  # (the checks above checked numbers)
    for name in sites:  # what left is in each site's audit log, and kept as it left
        assert "discovery.published" in audit_actions(sites[name])
        kept = json.loads((sites[name].paths.root / "federation"
                           / "discovery-published.json").read_text())
        assert kept["rule"]["granularity"] == ("boolean" if name == "epsilon" else "count")
    token = hub_cli("hub", "token", "create", "d.iscovery")["token"]  # asked from elsewhere
    remote = subprocess.run([*RADFLOW, "discover", "--where", "modality=CT", "--json"],
                            env={**os.environ, "RADFLOW_HUB_URL": federation["proxy"].url,
                                 "RADFLOW_HUB_TOKEN": token}, capture_output=True, text=True,
                            timeout=120, check=False)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["sites"] == answered("modality=CT")["sites"]
    refused = run(hub_home, "discover", "--where", "kvp>=100")
    assert refused.returncode != 0 and "do not hold 'kvp'" in refused.stderr, refused.stderr
    split = run(hub_home, "discover", "--where", "age_years>=65")
    assert split.returncode != 0 and "splits a band" in split.stderr, split.stderr

    # the coordinator's Discover page: the fleet's summaries, a question, an access request
    page, web = coordinator_page(browser, hub_cli, "coordinator", "/discover")
    assert {r.get_attribute("data-site") for r in page.locator("#summaries tbody tr").all()} \
        == set(sites)
    page.fill("#purpose", "Feasibility of a CT study: how many series match, per hospital")
    page.check(f"#request input[name=flows][value='{FLOW}']")
    for name in ("alpha", "epsilon"):
        page.check(f"#request input[name=sites][value='{name}']")
    page.fill("#request-cohort", "modality=CT")
    page.click("#file")
    page.wait_for_url(f"{web}/discover#requests")
    assert "filed" in page.inner_text(".flash")
    (request,) = [r for r in hub_cli("hub", "access", "list") if r["purpose"].startswith(
        "Feasibility of a CT")]
    assert request["sites"] == ["alpha", "epsilon"] and request["flows"] == [FLOW]
    assert request["cohort_hash"] == parse_short(["modality=CT"]).content_hash
    assert request["created_by"].startswith("web:") and request["decisions"] == {}
    assert "modality = CT" in page.inner_text(f"#access-requests tr[data-request='"
                                              f"{request['id']}']")
    page.fill("#where", "modality=CT")
    page.click("#ask-button")
    page.wait_for_selector("#answer")
    ct = {name: exact(ctx, ["modality=CT"]) for name, ctx in sites.items()}
    assert page.inner_text("#answer tr[data-site='delta'] .count").strip() == str(ct["delta"])
    assert page.inner_text("#answer tr[data-site='epsilon'] .count").strip() == "yes"
    assert page.inner_text("#answer #total .count").strip() == str(
        rounded(ct["alpha"], 2, 5) + ct["delta"])
    page.screenshot(path=str(shots / "hub-discover.png"), full_page=True)

    # epsilon requires a request: the hub does not start a study there before its approval
    poll(lambda: next(r for r in hub_cli("hub", "fleet") if r["site"] == "epsilon")["policy"]
         .get("require_access_request"), 60, "epsilon's report of its policy")
    blocked = run(hub_home, "study", "run", FLOW, "--cohort", str(cohort_file), "--sites",
                  "epsilon", "--json")
    assert blocked.returncode != 0 and "access request" in blocked.stderr, blocked.stderr

    # epsilon's steward approves it on the Federation page; alpha's declines it on the CLI
    steward = log_in(browser, sites["epsilon"], "steward", "/federation")
    card = f".access-request[data-request='{request['id']}']"
    assert "Feasibility of a CT study" in steward.inner_text(card)
    assert steward.inner_text(f"{card} .cohort") == "modality = CT"
    steward.screenshot(path=str(shots / "federation-access-request.png"), full_page=True)
    steward.click(f"{card} button[value=approve]")
    steward.wait_for_url(f"{app_url(sites['epsilon'])}/federation#access")
    assert "approved" in steward.inner_text(".flash")
    steward.context.close()
    page.context.close()
    no_reason = cli("site", "access", "decline", request["id"], "--site", "alpha",
                    "--reason", " ", check=False)
    assert no_reason.returncode != 0 and "a decline says why" in no_reason.stderr
    cli("site", "access", "decline", request["id"], "--site", "alpha", "--reason",
        "our ethics board has not seen it", check=True)
    assert "access.approved" in audit_actions(sites["epsilon"])
    assert "access.declined" in audit_actions(sites["alpha"])
    decided = poll(lambda: [r for r in hub_cli("hub", "access", "list") if r["id"] == request[
        "id"] and len(r["decisions"]) == 2], 60, "both decisions at the hub")[0]["decisions"]
    assert decided["epsilon"]["decision"] == "approved" and decided["epsilon"]["by"].startswith(
        "web:")
    assert decided["alpha"] == decided["alpha"] | {"decision": "declined",
                                                  "reason": "our ethics board has not seen it"}
    hub_log = (hub_home / "hub" / "audit.jsonl").read_text()
    assert '"access.request"' in hub_log and '"access.approved"' in hub_log

    # now the study runs at epsilon, on that cohort
    study = hub_cli("study", "run", FLOW, "--cohort", str(cohort_file), "--sites", "epsilon",
                    "--deadline", "120")
    (epsilon,) = study["sites"]
    assert epsilon["status"] == "released", study
    assert epsilon["release"]["matching"] == ct["epsilon"]
    # the steward withdraws the approval: the site itself refuses the next job (or, where its
    # agent told the hub first, the hub does not start it)
    cli("site", "access", "decline", request["id"], "--site", "epsilon", "--reason",
        "withdrawn: the study's protocol changed", check=True)
    again = run(hub_home, "study", "run", FLOW, "--cohort", str(cohort_file), "--sites",
                "epsilon", "--deadline", "120", "--json")
    if again.returncode == 0:
        (epsilon,) = json.loads(again.stdout)["sites"]
        assert (epsilon["status"], epsilon["refusal"]) == ("refused", "no_access_request")
    else:
        assert "access request" in again.stderr, again.stderr

    # a site that turns discovery off withdraws its summary
    cli("site", "policy", "set", "discovery=off", "--site", "delta", check=True)
    gone = poll(lambda: (lambda a: a if "delta" not in a["sites"] else None)(answered()), 60,
                "delta's summary withdrawn")
    assert "delta" in gone["silent"] and "discovery.withdrawn" in audit_actions(sites["delta"])
