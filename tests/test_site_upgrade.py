"""`radflow site upgrade` on a site whose catalog is at the previous release's schema (the
migrations' head's parent: what the last release wrote), with images, a result with its
features and audit events in it: the command migrates, starts the site, verifies and records it;
every row of the results and features is as it was, the audit chain verifies and keeps every
event word for word, Orthanc holds every instance, and a SQLite copy of the old catalog is
kept. A site whose audit chain is broken is not touched."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import send, wait_settled
from sqlalchemy import create_engine, text
from sqlmodel import select

from radflow import __version__, audit
from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.migrate import _config, current_revision, head
from radflow.catalog.models import DerivedResult, FeatureValue, Series
from radflow.enums import ResultKind, ResultStatus
from radflow.errors import SiteError


def previous_revision() -> str:
    from alembic.script import ScriptDirectory

    from radflow.catalog.migrate import SCRIPTS

    return ScriptDirectory(str(SCRIPTS)).get_revision(head()).down_revision


def rows(url: str, table: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} "
                                                              "ORDER BY id"))]
    finally:
        engine.dispose()


@pytest.fixture()
def site(manager):
    """A site of its own ('upgr'): the session's site is never stopped and started under it
    (its other tests hold clients and log-ins of the running one)."""
    manager.up("upgr", stable_age=2)
    yield manager.context("upgr")
    manager.down("upgr")


@pytest.mark.services
@pytest.mark.slow
def test_an_upgrade_from_the_previous_schema_keeps_everything(site, manager, synth_dir,
                                                              cli) -> None:
    wait_settled(site)
    send(site, synth_dir)
    wait_settled(site)
    with session_scope(site.catalog_url) as session:  # a result with features, as a run's
        series = session.exec(select(Series)).first()
        result = DerivedResult(key=f"upgrade-{series.series_uid}", kind=ResultKind.SR,
                               source_series_uid=series.series_uid, algorithm="upgrade-test",
                               version="1", status=ResultStatus.ACCEPTED, status_by="dr-u")
        session.add(result)
        session.flush()
        for k, name in enumerate(("original_shape_VoxelVolume", "original_firstorder_Mean")):
            session.add(FeatureValue(result_pk=result.id, source_series_uid=series.series_uid,
                                     segment_number=1, segment_label="liver", feature=name,
                                     value=1234.5 + k, unit="mm3" if k == 0 else "HU"))
    audit.record(site.catalog_url, actor="dr-u", action="result.status",
                 subject=f"result:{result.id}", detail={"status": "accepted"})
    instances = site.orthanc_client().statistics()["CountInstances"]
    manager.down(site.name)
    previous = previous_revision()
    with get_engine(site.catalog_url).connect() as connection:  # the last release's schema
        from alembic import command

        command.downgrade(_config(connection), previous)
        connection.commit()
    get_engine.cache_clear()
    assert current_revision(create_engine(site.catalog_url)) == previous
    results, features = rows(site.catalog_url, "result"), rows(site.catalog_url, "feature")
    engine = create_engine(site.catalog_url)  # (radflow.audit would migrate it on opening)
    with engine.connect() as connection:
        chain = [tuple(r) for r in connection.execute(text(
            "SELECT seq, actor, action, subject, detail, prev_hash, hash FROM audit_event "
            "ORDER BY seq"))]
    engine.dispose()
    assert chain and results and len(features) >= 2

    try:
        proc = cli("site", "upgrade", "--site", site.name, "--json", timeout=400)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        if manager.status(site.name).state != "running":  # (for the other checks below)
            manager.up(site.name)
    done = json.loads(proc.stdout)
    assert done["from"]["schema"] == previous and done["to"] == {"radflow": __version__,
                                                                "schema": head()}
    assert done["state"] == "running" and all(done["checks"].values()), done["checks"]
    assert done["before"]["counts"]["results"] == len(results)
    assert current_revision(site.catalog_url) == head()
    # nothing lost: the rows as they were, the chain with every event it had
    assert rows(site.catalog_url, "result") == results
    assert rows(site.catalog_url, "feature") == features
    assert audit.verify(site.catalog_url).ok
    engine = create_engine(site.catalog_url)
    with engine.connect() as connection:
        after = [tuple(r) for r in connection.execute(text(
            "SELECT seq, actor, action, subject, detail, prev_hash, hash FROM audit_event "
            "ORDER BY seq"))]
    engine.dispose()
    assert after[:len(chain)] == chain
    added = [(r[1], r[2]) for r in after[len(chain):]]
    assert ("radflow:site-upgrade", "site.upgrade") in added
    assert ("radflow:site-upgrade", "site.upgraded") in added
    assert site.orthanc_client().statistics()["CountInstances"] == instances
    assert manager.status(site.name).state == "running"
    # the old catalog is kept, owner-only, at the old schema
    backup = Path(done["backup"])
    assert backup.parent == site.paths.root / "backups" and backup.stat().st_mode & 0o077 == 0
    assert current_revision(create_engine(f"sqlite:///{backup}")) == previous
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT count(*) FROM result").fetchone()[0] == len(results)
    assert json.loads((site.paths.root / "radflow-version.json").read_text()) == {
        "radflow": __version__}


class _Stopped:
    """A site manager's view of a stopped site at ``ctx`` (nothing may be started or stopped)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def context(self, name):
        return self.ctx

    def status(self, name):
        return type("S", (), {"state": "stopped"})()

    def down(self, name):
        raise AssertionError("a site whose chain is broken is not stopped")

    def up(self, name, **kwargs):
        raise AssertionError("a site whose chain is broken is not started")


def test_a_broken_audit_chain_stops_the_upgrade_before_anything_changes(tmp_path) -> None:
    from radflow.site.upgrade import upgrade_site

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    for k in range(3):
        audit.record(url, actor="dr-a", action="result.status", subject=f"result:{k}")
    with sqlite3.connect(tmp_path / "catalog.db") as db:
        db.execute("UPDATE audit_event SET actor = 'someone else' WHERE seq = 2")
    ctx = type("Ctx", (), {"catalog_url": url, "paths": type("P", (), {"root": tmp_path})()})()
    with pytest.raises(SiteError, match="audit chain does not verify") as refused:
        upgrade_site(_Stopped(ctx), "lab")
    assert "nothing was changed" in refused.value.message
    assert not (tmp_path / "backups").exists()
    with sqlite3.connect(tmp_path / "catalog.db") as db:
        assert db.execute("SELECT count(*) FROM audit_event").fetchone()[0] == 3  # none added
