"""`radflow site upgrade`: bring a site to the radflow installed here, and prove nothing was lost.

After the site's IT has installed a newer radflow (``pip install -U radflow ...``), one command:

1. takes stock: the catalog's schema revision, the radflow version the site last ran, how many
   series, instances, results, features and audit events it holds, Orthanc's instance count
   (when it runs), and checks the audit chain (a broken chain stops the upgrade: nothing is
   changed);
2. stops the site, copies a SQLite catalog aside (``backups/catalog-<revision>-<time>.db``;
   a PostgreSQL catalog is the database administrator's to back up: it is said, not done);
3. migrates the catalog to this radflow's schema (Alembic; :mod:`radflow.catalog.migrate`);
4. records ``site.upgrade`` (from, to, the backup) in the audit log, which lives in the catalog
   (so under its new schema), before the site starts again;
5. starts the site again (the agent then reports its new versions to the hub's fleet);
6. verifies: every count is at least what it was (a watcher may catalog new images at once),
   the audit chain verifies and still holds every event it had, word for word (its hash at the
   old head is unchanged), the site runs, Orthanc holds the instances it held;
7. records ``site.upgraded`` with what it found, and says so. A failed check raises, naming
   the check and the backup to restore.

    from radflow.site.upgrade import upgrade_site
    report = upgrade_site(SiteManager(), "lab", print)   # {"from": ..., "to": ..., "checks": ...}
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from radflow.errors import RadflowError, SiteError

VERSION_FILE = "radflow-version.json"  # what the site last ran (written by `site up`)
ACTOR = "radflow:site-upgrade"
COUNTED = ("series", "instances", "results", "features", "audit_events")
TABLES = ("series", "instance", "result", "feature", "audit_event")


def record_version(root: Path) -> None:
    """Write the radflow version (and catalog schema) this site now runs under."""
    from radflow import __version__

    (root / VERSION_FILE).write_text(json.dumps({"radflow": __version__}) + "\n")


def last_version(root: Path) -> str | None:
    try:
        return json.loads((root / VERSION_FILE).read_text())["radflow"]
    except (OSError, ValueError, KeyError):
        return None


def stock(ctx: Any, orthanc: bool) -> dict[str, Any]:
    """What the site holds: catalog counts, the audit chain's state, Orthanc's instances. The
    catalog is read as it is, never migrated (opening it through radflow.catalog.db would)."""
    from sqlalchemy import create_engine, text
    from sqlmodel import Session

    from radflow import audit
    from radflow.catalog.migrate import current_revision
    from radflow.catalog.models import AuditEvent

    engine = create_engine(ctx.catalog_url)
    try:
        with Session(engine) as session:
            counts = {name: session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                      for name, table in zip(COUNTED, TABLES, strict=True)}
            check = audit.verify_events(session.exec(select(AuditEvent).order_by(
                col(AuditEvent.seq))))
        revision = current_revision(engine)
    finally:
        engine.dispose()
    out = {"revision": revision, "radflow": last_version(ctx.paths.root), "counts": counts,
           "audit_ok": check.ok, "audit_problem": check.reason,
           "audit_head": {"seq": check.events, "hash": check.head}, "orthanc_instances": None}
    if orthanc:
        out["orthanc_instances"] = ctx.orthanc_client(timeout=30).statistics()["CountInstances"]
    return out


def backup_catalog(ctx: Any, revision: str | None) -> Path | None:
    """A consistent copy of a SQLite catalog (SQLite's online backup); None for PostgreSQL."""
    if not ctx.catalog_url.startswith("sqlite:///"):
        return None
    source = Path(ctx.catalog_url.removeprefix("sqlite:///"))
    folder = ctx.paths.root / "backups"
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"catalog-{revision or 'none'}-{stamp}.db"
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    target.chmod(0o600)
    return target


def _event_hash_at(ctx: Any, seq: int) -> str | None:
    from radflow.catalog.db import session_scope
    from radflow.catalog.models import AuditEvent

    with session_scope(ctx.catalog_url) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.seq == seq)).first()
        return row.hash if row else None


def upgrade_site(manager: Any, name: str,
                 say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Migrate, restart, verify and record the upgrade of site ``name`` (see the module).

    Raises:
        SiteError: the audit chain did not verify before (nothing changed), or a check after
            the upgrade failed (the message names it and the backup to restore).
    """
    from radflow import __version__, audit
    from radflow.catalog.migrate import head, upgrade

    ctx = manager.context(name)
    running = manager.status(name).state != "stopped"
    before = stock(ctx, orthanc=running and _orthanc_up(manager, name))
    if not before["audit_ok"]:
        raise SiteError(f"site {name!r}: its audit chain does not verify "
                        f"({before['audit_problem']}); nothing was changed",
                        fix=f"radflow site audit verify --site {name}; upgrade once the chain "
                            "is understood and repaired from a backup")
    target = head()
    say(f"site {name}: radflow {before['radflow'] or 'unknown'} -> {__version__}, catalog "
        f"schema {before['revision'] or 'none'} -> {target}; "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in before["counts"].items()))
    if running:
        say(f"stopping: {', '.join(manager.down(name)) or 'nothing was running'}")
    backup = backup_catalog(ctx, before["revision"])
    say(f"catalog copied to {backup}" if backup else
        "the catalog is on PostgreSQL: back it up with pg_dump (radflow makes no copy)")
    revision = upgrade(ctx.catalog_url)
    say(f"catalog: schema revision {revision}")
    # (the log lives in the catalog: its first event under the new schema, before the start)
    audit.record(ctx.catalog_url, actor=ACTOR, action="site.upgrade", subject=f"site:{name}",
                 detail={"from": {"radflow": before["radflow"], "schema": before["revision"]},
                         "to": {"radflow": __version__, "schema": target},
                         "backup": str(backup) if backup else None})
    status = manager.up(name, progress=lambda m: say(f"  {m}"))
    record_version(ctx.paths.root)
    after = stock(ctx, orthanc=before["orthanc_instances"] is not None)
    restore = f"restore {backup} as the catalog" if backup else "restore the catalog's dump"
    checks = {
        "running": status.state == "running",
        "schema": after["revision"] == target,
        "counts": all(after["counts"][k] >= before["counts"][k] for k in COUNTED),
        "audit_chain": after["audit_ok"],
        "audit_history": before["audit_head"]["seq"] == 0 or _event_hash_at(
            ctx, before["audit_head"]["seq"]) == before["audit_head"]["hash"],
        "orthanc": before["orthanc_instances"] is None or (
            after["orthanc_instances"] or 0) >= before["orthanc_instances"]}
    failed = [k for k, ok in checks.items() if not ok]
    result = {"site": name, "from": {"radflow": before["radflow"], "schema": before["revision"]},
              "to": {"radflow": __version__, "schema": after["revision"]},
              "before": {"counts": before["counts"], "orthanc_instances":
                         before["orthanc_instances"]},
              "after": {"counts": after["counts"], "orthanc_instances":
                        after["orthanc_instances"]},
              "backup": str(backup) if backup else None, "state": status.state,
              "checks": checks}
    audit.record(ctx.catalog_url, actor=ACTOR, action="site.upgraded", subject=f"site:{name}",
                 detail={k: result[k] for k in ("from", "to", "checks", "backup")}
                 | {"counts": after["counts"]})
    if failed:
        raise SiteError(f"site {name!r} was upgraded, but the check{'s' if len(failed) > 1 else ''}"
                        f" {', '.join(failed)} failed: before {before['counts']}, after "
                        f"{after['counts']}, state {status.state}",
                        fix=f"read `radflow site status --site {name}` and the logs; to go "
                            f"back, stop the site, {restore} and reinstall the previous radflow")
    return result


def _orthanc_up(manager: Any, name: str) -> bool:
    try:
        return manager.status(name).component("orthanc").state == "running"
    except (StopIteration, RadflowError):
        return False
