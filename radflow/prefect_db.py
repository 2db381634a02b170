"""A new Prefect server's SQLite database, copied from a template.

Prefect builds its schema with about a hundred Alembic migrations: 5 to 6 s of CPU on the first
start of every new site's and hub's server, before it answers. The first start on a machine
migrates an empty database once (``prefect server database upgrade``, a process of its own)
and keeps it in the user's cache as a template, named by Prefect's version. Every new database
after that is a copy; the server's own migration on start then finds nothing to do.

The template holds Prefect's schema and nothing else. Its ``configuration`` table is empty: each
server writes its own encryption key for block documents there (and its telemetry session), so
two sites never share one.

Example:
    ```python
    from radflow.prefect_db import seed
    seed(Path("~/.radflow/sites/lab/prefect/prefect.db").expanduser())
    ```
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("radflow.prefect_db")


def template_path() -> Path:
    """Where the template for the installed Prefect lives (the user's cache)."""
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "radflow"
    return cache / f"prefect-{version('prefect')}-schema.db"


def _migrated(path: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
    except sqlite3.Error:
        return False


def ensure_template() -> Path:
    """The template, migrated first if there is none (or a broken one).

    Raises:
        OSError, subprocess.SubprocessError, sqlite3.Error: it could not be made.
    """
    template = template_path()
    if _migrated(template):
        return template
    template.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="radflow-prefect-") as scratch:
        fresh = Path(scratch) / "prefect.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_HOME": scratch, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{fresh}"})
        subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                       env=env, cwd=scratch, capture_output=True, timeout=600, check=True)
        with contextlib.closing(sqlite3.connect(fresh)) as db:
            db.execute("DELETE FROM configuration")  # (a key or session: none is written)
            db.commit()
        staged = template.with_name(f".{template.name}.{os.getpid()}")
        _copy(fresh, staged)
        os.replace(staged, template)  # two first starts at once: either copy is whole
    return template


def _copy(source: Path, target: Path) -> None:
    """A consistent, owner-only copy of a SQLite database (its WAL folded in), in rollback
    mode: a copy at rest has no -wal or -shm file beside it (Prefect's server turns WAL on
    again when it opens its copy)."""
    target.unlink(missing_ok=True)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")


def seed(database: Path) -> bool:
    """Make ``database`` a copy of the template when it does not exist yet. Returns whether it
    did; when the template cannot be had (no writable cache, say), the server migrates its new
    database itself, as it always could, and nothing is lost but time."""
    if database.exists():
        return False
    try:
        template = ensure_template()
        database.parent.mkdir(parents=True, exist_ok=True)
        staged = database.with_name(f".{database.name}.{os.getpid()}")
        _copy(template, staged)
        os.replace(staged, database)
    except (OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        logger.warning("Prefect's database template could not be used (%s); the server "
                       "migrates its new database itself", exc)
        return False
    return True
