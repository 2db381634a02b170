"""The hub's folder under ``$RADFLOW_HOME/hub/``: ``hub.json`` (port, public URL), ``hub.db``
(the federation API's database), ``keys/hub.key`` (its Ed25519 signing key, 0600), logs, run."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

DEFAULT_PORT = 8700


@dataclass
class HubHome:
    root: Path

    @classmethod
    def of(cls, radflow_home: Path) -> HubHome:
        return cls(radflow_home / "hub")

    @property
    def key(self) -> Path:
        return self.root / "keys" / "hub.key"

    @property
    def config_file(self) -> Path:
        return self.root / "hub.json"

    def config(self) -> dict:
        if self.config_file.exists():
            return json.loads(self.config_file.read_text())
        return {}

    def make(self, port: int | None, public_url: str | None) -> dict:
        from radflow.federation.signing import generate

        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.key.exists():
            generate(self.key)
        config = self.config()
        config["port"] = port or config.get("port") or DEFAULT_PORT
        if public_url is not None:
            config["public_url"] = public_url or None
        self.config_file.write_text(json.dumps(config, indent=2))
        return config

    def url(self) -> str:
        config = self.config()
        return config.get("public_url") or f"http://127.0.0.1:{config.get('port', DEFAULT_PORT)}"

    def engine(self) -> Engine:
        from sqlmodel import create_engine

        from radflow.hub import registry

        engine = create_engine(f"sqlite:///{self.root / 'hub.db'}")
        registry.create(engine)
        return engine
