"""PostgreSQL for radflow's databases: URL handling for each consumer, and a throwaway cluster
(Debian's ``postgresql`` package) for tests and benchmarks.

A site or hub takes plain ``postgresql://user:password@host:port/database`` URLs; each consumer
gets the driver it needs:

* the catalog, the hub database and Alembic: ``postgresql+psycopg://`` (psycopg 3);
* Prefect's server: ``postgresql+asyncpg://``;
* Orthanc's index plugin: host, port, database, user and password as separate settings.

Example:
    ```python
    from radflow.postgres import TemporaryCluster

    with TemporaryCluster() as cluster:          # initdb + postgres on a free loopback port
        url = cluster.create_database("catalog")  # postgresql://radflow:...@127.0.0.1:PORT/catalog
    ```
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from radflow.errors import ConfigurationError

SCHEMES = ("postgresql", "postgres")
SYNC_DRIVER = "postgresql+psycopg"
ASYNC_DRIVER = "postgresql+asyncpg"


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] in SCHEMES


def with_driver(url: str, driver: str) -> str:
    """The URL with SQLAlchemy's ``driver`` scheme (``postgresql+psycopg`` ...); other engines'
    URLs (SQLite) are returned as they are."""
    if not is_postgres(url):
        return url
    return f"{driver}:{url.split(':', 1)[1]}"


def sync_url(url: str) -> str:
    return with_driver(url, SYNC_DRIVER)


def async_url(url: str) -> str:
    return with_driver(url, ASYNC_DRIVER)


def check_url(url: str, what: str) -> str:
    """A database URL radflow can use for ``what`` (SQLite or PostgreSQL), or a clear error."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in (*SCHEMES, "sqlite") or "://" not in url:
        raise ConfigurationError(
            f"the {what} URL must be postgresql://… or sqlite:///…, got scheme {scheme!r}",
            fix="e.g. postgresql://radflow:PASSWORD@db.example.org:5432/radflow_catalog")
    if is_postgres(url) and not urlsplit(url).path.strip("/"):
        raise ConfigurationError(f"the {what} URL names no database",
                                 fix="end the URL with /DATABASE, e.g. …:5432/radflow_catalog")
    return url


def orthanc_settings(url: str) -> dict[str, object]:
    """Orthanc's ``PostgreSQL`` section for the index plugin, from a postgresql:// URL."""
    parts = urlsplit(url)
    return {"EnableIndex": True, "EnableStorage": False, "Host": parts.hostname or "127.0.0.1",
            "Port": parts.port or 5432, "Database": parts.path.strip("/"),
            "Username": unquote(parts.username or ""), "Password": unquote(parts.password or ""),
            "Lock": False, "EnableSsl": False, "MaximumConnectionRetries": 30,
            "ConnectionRetryInterval": 1}


def bindir() -> Path:
    """Debian's PostgreSQL programs (the newest installed major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise ConfigurationError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)",
                                 fix="sudo apt-get install postgresql  (or run make setup)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only (password log-in,
    SCRAM), removed on :meth:`stop`. Run as root, the server runs as Debian's ``postgres`` user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, port: int | None = None, user: str = "radflow") -> None:
        self.port = port or _free_port()
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.folder = Path(tempfile.mkdtemp(prefix="radflow-pg-"))
        self.data = self.folder / "data"
        self._as: list[str] = []

    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._as, *argv], check=False, capture_output=True, text=True,
                                cwd=self.folder, **kwargs)
        if result.returncode != 0:
            raise ConfigurationError(f"{Path(argv[0]).name} failed: "
                                     f"{(result.stderr or result.stdout).strip()[-800:]}",
                                     fix="see the PostgreSQL log in " + str(self.folder))
        return result

    def start(self) -> TemporaryCluster:
        bin_ = bindir()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        self._run([str(bin_ / "initdb"), "-D", str(self.data), "-U", self.user,
                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.folder} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   f"-c shared_buffers=256MB")
        self._run([str(bin_ / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.folder / "postgres.log"), "-o", options, "-w", "-t", "60", "start"])
        return self

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"
                f"/{database}")

    def create_database(self, name: str) -> str:
        """Create a database; returns its plain postgresql:// URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(bindir() / "pg_ctl"), "-D", str(self.data), "-m",
                            "immediate", "-w", "stop"], check=False, capture_output=True,
                           cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TemporaryCluster:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

