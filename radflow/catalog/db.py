"""Catalog database: SQLite by default (WAL, so the watcher and flow runs can share it),
PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import event
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


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per catalog URL per process; the schema is created or upgraded (Alembic
    migrations) on first use."""
    if url.startswith("sqlite"):
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
