"""Catalog database: SQLite by default (WAL, so the watcher and flow runs can share it),
PostgreSQL by URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from radflow.catalog import models  # noqa: F401  (the tables, for sessions and queries)
from radflow.catalog.migrate import upgrade

BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: a 100,000-series catalog stays in memory
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def private_sqlite(url: str) -> None:
    """A SQLite database file readable by its owner only (0600; SQLite gives its -wal and -shm
    files the same mode): created so when new, narrowed when it was made wider."""
    path = make_url(url).database
    if not url.startswith("sqlite") or not path or path == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:  # no such folder, another user's file: SQLite says what is wrong
        return


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per catalog URL per process; the schema is created or upgraded (Alembic
    migrations) on first use. A SQLite file is the owner's only (:func:`private_sqlite`)."""
    if url.startswith("sqlite"):
        private_sqlite(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    upgrade(engine)
    return engine


def optimize(url: str) -> None:
    """Refresh SQLite's query-planner statistics when the series table has grown or shrunk by
    more than 10% since they were taken (``ANALYZE``; ~0.1 s per 100,000 series). Without them
    SQLite picks poor indexes for cohort queries. Run after each ingest."""
    if not url.startswith("sqlite"):
        return
    with get_engine(url).connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM series").scalar()
        try:
            stat = connection.exec_driver_sql(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = 'series' LIMIT 1").scalar()
        except OperationalError:  # never analyzed: no sqlite_stat1 table yet
            stat = None
        analyzed = int(stat.split()[0]) if stat else 0
        if abs(count - analyzed) > 0.1 * max(analyzed, 1):
            connection.exec_driver_sql("ANALYZE")
            connection.commit()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
