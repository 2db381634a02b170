"""The hub's folder under ``$RADFLOW_HOME/hub/`` (mode 0700):

- ``hub.json``: the federation API's port and public URL, the hub Prefect server's port;
- ``secrets.json`` (0600): the hub Prefect server's credential (never given to a site), the
  coordinators' web app's session key and OIDC client secret, the embedded provider's key and
  its demo users' passwords;
- ``hub.db``: the federation API's database; ``keys/hub.key``: its Ed25519 signing key (0600);
- ``prefect/``: the hub Prefect server's home and database; ``studies/``: study artifacts;
- ``idp/``: the embedded OpenID provider (canaille) the coordinators log in with;
- ``logs/``, ``run/``: the processes' logs and PID files.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from radflow.prefect_api import PrefectApi

DEFAULT_PORT = 8700
WORK_POOL = "hub"
# the hub's databases (secrets.json keys) and what each holds, as the site's DATABASES
DATABASES = {"database_url": "hub database", "prefect_database_url": "hub Prefect database"}
# The embedded provider's demo users and their roles (groups) on the hub.
HUB_USERS = {"coordinator": ("coordinator",), "admin": ("admin",)}
COORDINATOR_ROLES = ("coordinator", "admin")
OIDC_DEFAULTS = {"issuer": None, "client_id": "radflow-hub", "roles_claim": "groups",
                 "session_hours": 8.0}


@dataclass
class HubHome:
    root: Path
    _engine: Engine | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, radflow_home: Path) -> HubHome:
        return cls(radflow_home / "hub")

    @property
    def key(self) -> Path:
        return self.root / "keys" / "hub.key"

    @property
    def config_file(self) -> Path:
        return self.root / "hub.json"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def config(self) -> dict:
        if self.config_file.exists():
            return json.loads(self.config_file.read_text())
        return {}

    def make(self, port: int | None, public_url: str | None, prefect_port: int | None = None,
             bind: str | None = None, certfile: Path | None = None,
             keyfile: Path | None = None, web_port: int | None = None,
             idp_port: int | None = None, databases: dict[str, str | None] | None = None) -> dict:
        """Create or update the hub's folder and settings. Options left out keep what the last
        ``hub up`` recorded (a restarted hub serves as before). ``databases``: ``database_url``
        (the hub database) and ``prefect_database_url`` (its Prefect server), PostgreSQL URLs
        kept with the secrets ("" goes back to SQLite)."""
        from radflow.federation.signing import generate

        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.key.exists():
            generate(self.key)
        self._complete_secrets({k: v for k, v in (databases or {}).items() if v is not None})
        config = self.config()
        from radflow.site.config import first_free_port, port_reservations

        taken: set[int] = set()
        with port_reservations() as reserved:
            for key, given, offset in (("port", port, 0), ("prefect_port", prefect_port, 10),
                                       ("web_port", web_port, 20), ("idp_port", idp_port, 30)):
                # given, else kept, else the first free one from the conventional port on
                # (another hub or site on this machine may hold 8700..., or have just chosen it)
                config[key] = given or config.get(key) or first_free_port(
                    (config["port"] if offset else DEFAULT_PORT) + offset, taken, reserved, key)
                taken.add(config[key])
        config["oidc"] = OIDC_DEFAULTS | config.get("oidc", {})
        if public_url is not None:
            config["public_url"] = public_url or None
        if bind is not None:
            config["bind"] = bind
        if certfile is not None and keyfile is not None:
            config["certfile"], config["keyfile"] = str(certfile.resolve()), \
                str(keyfile.resolve())
        config["tls"] = bool(config.get("certfile"))
        self.config_file.write_text(json.dumps(config, indent=2))
        return config

    def _complete_secrets(self, databases: dict[str, str] | None = None) -> None:
        """``secrets.json`` (0600) with every secret the hub needs; a hub made before one of them
        existed gets it here, the others are kept."""
        from radflow.postgres import check_url

        path = self.root / "secrets.json"
        have = json.loads(path.read_text()) if path.exists() else {}
        want = dict(have)
        for key, url in (databases or {}).items():
            if url:
                want[key] = check_url(url, DATABASES[key])
            else:
                want.pop(key, None)
        want.setdefault("prefect_auth_string", "radflow:" + secrets.token_urlsafe(24))
        for key in ("web_session_key", "oidc_client_secret", "idp_secret_key"):
            want.setdefault(key, secrets.token_urlsafe(32))
        want["users"] = {user: have.get("users", {}).get(user) or secrets.token_urlsafe(12)
                         for user in HUB_USERS}
        if want == have:
            return
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(want, out)
        tmp.replace(path)

    def secrets(self) -> dict:
        return json.loads((self.root / "secrets.json").read_text())

    def database_url(self) -> str:
        """The hub database (SQLAlchemy URL): PostgreSQL when configured, else SQLite here."""
        from radflow.postgres import sync_url

        url = self.secrets().get("database_url")
        return sync_url(url) if url else f"sqlite:///{self.root / 'hub.db'}"

    def prefect_database_url(self) -> str:
        """The hub Prefect server's database (async driver)."""
        from radflow.postgres import async_url

        url = self.secrets().get("prefect_database_url")
        return async_url(url) if url else f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}"

    def web_url(self) -> str:
        """The coordinators' web app as browsers reach it."""
        config = self.config()
        if config.get("web_public_url"):
            return config["web_public_url"].rstrip("/")
        scheme = "https" if config.get("tls") else "http"
        return f"{scheme}://127.0.0.1:{config.get('web_port', DEFAULT_PORT + 20)}"

    def oidc(self) -> dict:
        return OIDC_DEFAULTS | self.config().get("oidc", {})

    def issuer(self) -> str:
        """The provider coordinators log in with: the configured issuer, else the embedded
        canaille."""
        configured = self.oidc().get("issuer")
        if configured:
            return configured.rstrip("/")
        return f"http://127.0.0.1:{self.config().get('idp_port', DEFAULT_PORT + 30)}"

    def url(self) -> str:
        config = self.config()
        scheme = "https" if config.get("tls") else "http"
        return config.get("public_url") or \
            f"{scheme}://127.0.0.1:{config.get('port', DEFAULT_PORT)}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.config().get('prefect_port', DEFAULT_PORT + 10)}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    def prefect_auth_string(self) -> str:
        return self.secrets()["prefect_auth_string"]

    def prefect(self, timeout: float = 30.0) -> PrefectApi:
        from radflow.prefect_api import PrefectApi

        user, _, password = self.prefect_auth_string().partition(":")
        return PrefectApi(self.prefect_api_url, (user, password), timeout=timeout,
                          start="radflow hub up")

    def engine(self) -> Engine:
        """The hub database's engine, made and migrated once per HubHome (the API and the
        coordinator flow ask for it on every request)."""
        if self._engine is None:
            from sqlmodel import create_engine

            from radflow.catalog.db import private_sqlite
            from radflow.hub import registry

            private_sqlite(self.database_url())
            self._engine = create_engine(self.database_url())
            registry.create(self._engine)
        return self._engine
