"""`radflow site policy show|set` and `radflow site approve|revoke` on a real site: the policy
file with its documented defaults, and every change in the site's audit log."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from radflow.audit import verify
from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent
from radflow.federation.policy import policy_path

pytestmark = [pytest.mark.services]
HASH = "sha256:" + "ab" * 32


def last_actions(site, count: int) -> list[str]:
    with session_scope(site.catalog_url) as session:
        events = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())
                              .limit(count)).all()
    return [e.action for e in reversed(events)]


def test_policy_and_approvals_from_the_cli(site, cli) -> None:
    policy_path(site.paths.root).unlink(missing_ok=True)
    shown = json.loads(cli("site", "policy", "show", "--site", "alpha", "--json", check=True).stdout)
    assert (shown["min_cohort"], shown["min_cell"], shown["approved"]) == (10, 5, [])
    text = cli("site", "policy", "show", "--site", "alpha", check=True).stdout
    assert "min_cohort" in text and "default 10" in text

    changed = json.loads(cli("site", "policy", "set", "min_cohort=15", "job_mode=auto",
                             "--site", "alpha", "--json", check=True).stdout)
    assert changed["changed"] == {"min_cohort": 15, "job_mode": "auto"}
    bad = cli("site", "policy", "set", "min_cohort=none-such", "--site", "alpha")
    assert bad.returncode == 1 and "fix:" in bad.stderr

    # an approval names a version the hub offers (tests/test_hub_enrolment.py approves one):
    # a site that has joined no hub knows none, and an empty or malformed hash is no hash
    unknown = cli("site", "approve", HASH, "--site", "alpha")
    assert unknown.returncode == 1 and "has not joined a hub" in unknown.stderr
    for wrong in ("abc", "", "sha256:"):
        refused = cli("site", "approve", wrong, "--site", "alpha")
        assert refused.returncode == 1 and "not a flow version hash" in refused.stderr, wrong
    assert json.loads(cli("site", "policy", "show", "--site", "alpha", "--json",
                          check=True).stdout)["approved"] == []
    cli("site", "revoke", HASH, "--site", "alpha", check=True)  # withdrawing needs no hub
    after = json.loads(cli("site", "policy", "show", "--site", "alpha", "--json",
                           check=True).stdout)
    assert after["approved"] == [] and after["min_cohort"] == 15
    assert last_actions(site, 2) == ["policy.set", "version.revoked"]  # refusals change nothing
    assert verify(site.catalog_url).ok
    policy_path(site.paths.root).unlink()
