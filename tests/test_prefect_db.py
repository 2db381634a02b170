"""A new Prefect database is a copy of the migrated template (radflow.prefect_db): made once
per Prefect version in the user's cache, owner-only, holding Prefect's schema and no
configuration (each server writes its own encryption key). Every site and hub of the suite
starts its Prefect server on such a copy."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from radflow.prefect_db import seed, template_path


def rows(db: Path, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(query).fetchall()


def test_a_new_database_is_a_copy_of_the_migrated_template(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "prefect.db", tmp_path / "b" / "prefect.db"

    assert seed(first)

    template = template_path()
    assert template.parent == tmp_path / "cache" / "radflow"
    made = template.stat().st_mtime_ns
    assert seed(second) and template.stat().st_mtime_ns == made  # migrated once
    head = rows(template, "SELECT version_num FROM alembic_version")
    assert len(head) == 1
    for db in (template, first, second):
        assert db.stat().st_mode & 0o077 == 0, db  # the owner's only
        assert rows(db, "SELECT version_num FROM alembic_version") == head
        assert rows(db, "SELECT count(*) FROM configuration") == [(0,)]  # no shared key
        assert rows(db, "SELECT count(*) FROM flow_run") == [(0,)]
        assert rows(db, "PRAGMA journal_mode") == [("delete",)]
    assert seed(tmp_path / "b2" / "prefect.db")  # (a read-only look at the template, too)
    assert sorted(p.name for p in template.parent.iterdir()) == [template.name]  # no leftovers

    # a database that exists is never replaced
    first.write_bytes(b"the site's own")
    assert not seed(first) and first.read_bytes() == b"the site's own"
    # a broken template is made again
    template.write_bytes(b"half a file")
    assert seed(tmp_path / "c" / "prefect.db")
    assert rows(template, "SELECT version_num FROM alembic_version") == head
    # no cache to be had: no copy, and the server migrates its new database itself
    (tmp_path / "nocache").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nocache"))
    assert not seed(tmp_path / "d" / "prefect.db")
    assert not (tmp_path / "d" / "prefect.db").exists()
