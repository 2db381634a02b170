"""The hub's fleet table from the sites' reports (radflow.hub.fleet): a report adds a history
row only when it changed, drift is marked against the newest version in the fleet, silence
after five minutes, approvals pending for the newest published versions; a report with a field
the hub does not know, or an overlong value, is refused. (The agent's real report, against the
site's own `site status`: tests/test_federation_e2e.py.)"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlmodel import Session, create_engine

from radflow.catalog.models.base import utcnow
from radflow.hub import registry
from radflow.hub.fleet import SiteReport, fleet, history, record_report
from radflow.hub.models import HubJob, HubStudy, HubVersion


def _report(radflow: str = "0.1.0", nnunet: str = "0.1.0", approved=(), **more) -> SiteReport:
    return SiteReport.model_validate({
        "radflow": radflow,
        "plugins": [{"name": "nnunet", "distribution": "radflow-nnunet", "version": nnunet,
                     "hash": "sha256:" + "ab" * 32}],
        "models": [{"name": "radflow-abdomen-demo", "version": "1", "builtin": True}],
        "approved": list(approved), "policy": {"min_cohort": 10, "allow_weights": False},
        "health": {"state": "running", "components": [{"name": "orthanc", "state": "running"}]},
        "queue": 0, **more})


@pytest.fixture()
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    registry.create(engine)
    for name in ("essen", "mainz", "ulm"):
        registry.add_site(engine, name)  # (enrolled below by hand: no keys needed here)
    return engine


def _enrolled(engine, *names: str) -> None:
    from radflow.hub.models import HubSite

    with Session(engine) as session:
        for name in names:
            row = session.get(HubSite, name)
            row.status = "enrolled"
            session.add(row)
        session.commit()


def test_a_report_is_kept_where_it_changed(engine) -> None:
    _enrolled(engine, "essen")
    assert record_report(engine, "essen", _report())
    assert not record_report(engine, "essen", _report())  # the same again: heard, no new row
    assert record_report(engine, "essen", _report(queue=2))
    rows = history(engine, "essen")
    assert [r["queue"] for r in rows] == [2, 0]  # newest first
    (row,) = [r for r in fleet(engine) if r["site"] == "essen"]
    assert row["queue"] == 2 and row["heard_seconds_ago"] <= 5 and not row["silent"]


def test_drift_silence_pending_approvals_and_the_last_study(engine) -> None:
    _enrolled(engine, "essen", "mainz", "ulm")
    with Session(engine) as session:
        for k, (name, digest) in enumerate((("mean-volume", "sha256:old"),
                                            ("mean-volume", "sha256:new"),
                                            ("cohort-count", "sha256:cc"))):
            session.add(HubVersion(hash=digest, name=name, signed="{}", bundle=b"",
                                   published_at=utcnow() + timedelta(seconds=k)))
        session.add(HubStudy(id="s1", name="cohort-count", version_hash="sha256:cc",
                             deadline=utcnow()))
        session.add(HubJob(id="j1", study_id="s1", site="mainz", version_hash="sha256:cc",
                           status="released"))
        session.commit()
    record_report(engine, "essen", _report("0.2.0", "0.3.0", approved=["sha256:new", "sha256:cc"]))
    record_report(engine, "mainz", _report("0.1.0", "0.3.0", approved=["sha256:old"]))
    rows = {r["site"]: r for r in fleet(engine)}
    assert rows["essen"]["drift"] == [] and not rows["essen"]["radflow_behind"]
    assert rows["essen"]["pending_approvals"] == []
    assert rows["mainz"]["drift"] == ["radflow 0.1.0 < 0.2.0"] and rows["mainz"]["radflow_behind"]
    # the old version is approved, the newest is not: mean-volume waits on mainz's steward
    assert rows["mainz"]["pending_approvals"] == ["cohort-count", "mean-volume"]
    assert rows["mainz"]["last_study"] | {"started": None} == {
        "study": "s1", "flow": "cohort-count", "status": "released", "started": None}
    assert rows["ulm"]["health"] is None and rows["ulm"]["silent"]  # never heard
    record_report(engine, "ulm", _report("0.2.0", "0.2.9"))
    rows = {r["site"]: r for r in fleet(engine)}
    assert rows["ulm"]["drift"] == ["radflow-nnunet 0.2.9 < 0.3.0"]
    later = {r["site"]: r for r in fleet(engine, now=utcnow() + timedelta(minutes=6))}
    assert all(r["silent"] for r in later.values())  # five minutes without a word


def test_a_report_is_checked_before_it_is_kept() -> None:
    good = json.loads(_report().model_dump_json())
    for bad in ({**good, "patients": 1200},  # a field the hub does not know
                {**good, "radflow": "x" * 65},
                {**good, "health": {"state": "running", "components": [{"name": "a"}]}},
                {**good, "queue": -1},
                {**good, "policy": {"min_cohort": float("nan")}}):
        with pytest.raises(ValidationError):
            SiteReport.model_validate(bad)


def _publish(engine, tmp_path, requires: dict[str, str], weights: bool = False) -> str:
    """A signed version of a flow 'needy' with ``requires`` (and a round releasing weights)."""
    from radflow.federation.manifest import FlowVersion, sign_version
    from radflow.federation.release import ReleaseSchema
    from radflow.federation.signing import generate

    fields: dict = {"n": {"kind": "count"}}
    if weights:
        fields["w"] = {"kind": "weights", "shape": ["parameters"]}
    manifest = FlowVersion(name="needy", site_entrypoint="site.py:run", requires=requires,
                           release_schema=ReleaseSchema.model_validate({"fields": fields}))
    signed = sign_version(manifest, generate(tmp_path / "hub.key"))
    registry.publish(engine, signed, b"")
    return signed.hash


def test_which_sites_can_run_a_version(engine, tmp_path) -> None:
    """Before a study starts: a site whose reported radflow or plugin is below the version's
    need cannot run it (and says what to install); one never heard is unknown; approvals and a
    weights policy are warnings (the site's steward decides them)."""
    from radflow.hub.fleet import readiness

    _enrolled(engine, "essen", "mainz", "ulm")
    needed = _publish(engine, tmp_path, {"radflow": ">=0.2", "radflow-nnunet": ">=0.3",
                                         "pyradiomics": ">=3"}, weights=True)
    record_report(engine, "essen", _report("0.2.1", "0.3.0", approved=[needed]))
    record_report(engine, "mainz", _report("0.1.0", "0.2.9"))
    ready = readiness(engine, "needy")
    assert ready["version"] == needed and ready["requires"]["radflow"] == ">=0.2"
    rows = {r["site"]: r for r in ready["sites"]}
    assert rows["essen"]["can_run"] is True and rows["essen"]["blocking"] == []
    assert [w["code"] for w in rows["essen"]["warnings"]] == [
        "unknown", "policy_violation:weights"]  # pyradiomics: not in a report; no weights
    assert rows["mainz"]["can_run"] is False
    assert [(b["code"], b["text"]) for b in rows["mainz"]["blocking"]] == [
        ("unsupported_version:radflow", "needs radflow>=0.2 (has 0.1.0)"),
        ("unsupported_version:radflow-nnunet", "needs radflow-nnunet>=0.3 (has 0.2.9)")]
    assert "pip install 'radflow>=0.2'" in rows["mainz"]["blocking"][0]["fix"]
    assert "not_approved" in [w["code"] for w in rows["mainz"]["warnings"]]
    assert rows["ulm"]["can_run"] is None and [w["code"] for w in rows["ulm"]["warnings"]] == [
        "silent", "no_report"]
    assert [r["site"] for r in readiness(engine, "needy", ["mainz"])["sites"]] == ["mainz"]
    with pytest.raises(KeyError):
        readiness(engine, "never-published")


def test_a_contact_is_noted_at_most_every_ten_seconds_and_silence_is_a_duration(engine) -> None:
    """The API notes a site's contact (its long poll, its report) in last_heard, once per 10 s
    (a poll every second while jobs run writes no row each time); --silent-after reads 90,
    90s, 5m, 1h, and refuses what Prefect cannot watch (under 10 s) or is not a duration."""
    from radflow.errors import ConfigurationError
    from radflow.hub.alerts import Contact, heard_event, parse_duration
    from radflow.hub.models import HubSite

    def heard(name: str):
        with Session(engine) as session:
            return session.get(HubSite, name).last_heard

    contact = Contact(engine, home=None, every=10.0)
    contact("essen")
    first = heard("essen")
    assert first is not None and heard("mainz") is None
    contact("essen")
    assert heard("essen") == first  # within 10 s: not written again
    contact.noted["essen"] -= 11
    contact("essen")
    assert heard("essen") > first
    contact("nowhere")  # (a site the hub does not know: nothing to note)
    event = heard_event("essen")
    assert event["event"] == "radflow.site.heard" and \
        event["resource"]["prefect.resource.id"] == "radflow.site.essen"
    assert [parse_duration(t).total_seconds() for t in ("90", "90s", "5m", "1h", " 2M ")] == [
        90, 90, 300, 3600, 120]
    for bad in ("5", "soon", "", "8d"):
        with pytest.raises(ConfigurationError):
            parse_duration(bad)
