"""Create or upgrade a catalog database to radflow's schema (Alembic migrations).

A new database gets every migration. A database made before migrations existed (radflow 0.1 up
to commit 4f7e6ca: tables but no ``alembic_version``) is stamped as revision ``0001`` (its
schema exactly) and upgraded in place, rows and all. `radflow site up` runs this for the site's
catalog, and every process that opens a catalog runs it once.

Example:
    ```python
    from radflow.catalog.migrate import upgrade, current_revision

    upgrade("sqlite:////srv/radflow/sites/lab/catalog.db")
    print(current_revision("sqlite:////srv/radflow/sites/lab/catalog.db"))  # '0002'
    ```
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from radflow.errors import ConfigurationError

logger = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "migrations"
BASELINE = "0001"
_ALEMBIC = threading.RLock()  # see upgrade()


def _config(connection: Connection, scripts: Path = SCRIPTS):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["connection"] = connection
    return config


def head(scripts: Path = SCRIPTS) -> str:
    """The newest revision this radflow knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(scripts)).get_current_head()


def current_revision(engine_or_url: Engine | str) -> str | None:
    """The revision a database is at (None: empty or made before migrations)."""
    from alembic.runtime.migration import MigrationContext

    engine = _engine(engine_or_url)
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _engine(engine_or_url: Engine | str) -> Engine:
    if isinstance(engine_or_url, Engine):
        return engine_or_url
    from sqlalchemy import create_engine

    return create_engine(engine_or_url)


def upgrade(engine_or_url: Engine | str, scripts: Path = SCRIPTS,
            legacy_table: str = "series", what: str = "catalog") -> str:
    """Bring a catalog (or another radflow database: ``scripts`` holds its migrations) to the
    newest schema; returns the revision it is at. A database that has ``legacy_table`` but no
    revision was made before migrations: it is stamped as the baseline ``0001`` first.

    Raises:
        ConfigurationError: the database is newer than this radflow (downgrade radflow's data or
            upgrade radflow), or a migration failed (nothing is changed: each runs in a
            transaction).
    """
    with _ALEMBIC:  # alembic's `context` and `op` are module globals: one run at a time
        return _upgrade(engine_or_url, scripts, legacy_table, what)


def _upgrade(engine_or_url: Engine | str, scripts: Path, legacy_table: str, what: str) -> str:
    from alembic import command

    engine = _engine(engine_or_url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:  # table rebuilds must not trip foreign keys half-way
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            tables = set(inspect(connection).get_table_names())
            config = _config(connection, scripts)
            known = current_revision_of(connection)
            if known is None and legacy_table in tables:
                logger.info("%s made before migrations: stamping revision %s", what, BASELINE)
                command.stamp(config, BASELINE)
                connection.commit()
            elif known is not None and known not in _revisions(scripts):
                raise ConfigurationError(
                    f"the {what} {engine.url.render_as_string(hide_password=True)} is at schema "
                    f"revision {known}, which this radflow does not know (newest: "
                    f"{head(scripts)})",
                    fix=f"upgrade radflow to the version that wrote this {what}")
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    return head(scripts)


def current_revision_of(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _revisions(scripts: Path = SCRIPTS) -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory(str(scripts)).walk_revisions()}


def timestamps_with_time_zone(op, columns: dict[str, tuple[str, ...]], aware: bool = True) -> None:
    """On PostgreSQL, make the timestamp ``columns`` (table -> names) ``timestamp with time
    zone``, the type the models declare (their values are UTC), or back with ``aware=False``.
    SQLite has one type for both: nothing to do there."""
    if op.get_bind().dialect.name != "postgresql":
        return
    kind = "TIMESTAMP WITH TIME ZONE" if aware else "TIMESTAMP WITHOUT TIME ZONE"
    for table, names in columns.items():
        changes = ", ".join(f"ALTER COLUMN {name} TYPE {kind} USING {name} AT TIME ZONE 'UTC'"
                            for name in names)
        op.execute(f"ALTER TABLE {table} {changes}")
