"""The hub's folder under ``$RADFLOW_HOME/hub/`` (mode 0700):

- ``hub.json``: the federation API's port and public URL, the hub Prefect server's port;
- ``secrets.json`` (0600): the hub Prefect server's credential (never given to a site);
- ``hub.db``: the federation API's database; ``keys/hub.key``: its Ed25519 signing key (0600);
- ``prefect/``: the hub Prefect server's home and database; ``studies/``: study artifacts;
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
             keyfile: Path | None = None) -> dict:
        """Create or update the hub's folder and settings. Options left out keep what the last
        ``hub up`` recorded (a restarted hub serves as before)."""
        from radflow.federation.signing import generate

        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.key.exists():
            generate(self.key)
        secrets_file = self.root / "secrets.json"
        if not secrets_file.exists():
            fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"prefect_auth_string": "radflow:" + secrets.token_urlsafe(24)}, out)
        config = self.config()
        config["port"] = port or config.get("port") or DEFAULT_PORT
        config["prefect_port"] = prefect_port or config.get("prefect_port") or \
            config["port"] + 10
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
        return json.loads((self.root / "secrets.json").read_text())["prefect_auth_string"]

    def prefect(self, timeout: float = 30.0) -> PrefectApi:
        from radflow.prefect_api import PrefectApi

        user, _, password = self.prefect_auth_string().partition(":")
        return PrefectApi(self.prefect_api_url, (user, password), timeout=timeout, site="hub")

    def engine(self) -> Engine:
        """The hub database's engine, made and migrated once per HubHome (the API and the
        coordinator flow ask for it on every request)."""
        if self._engine is None:
            from sqlmodel import create_engine

            from radflow.hub import registry

            self._engine = create_engine(f"sqlite:///{self.root / 'hub.db'}")
            registry.create(self._engine)
        return self._engine
