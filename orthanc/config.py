"""Render an Orthanc configuration folder from the templates in ``templates/``.

The rendered folder holds two files: ``orthanc.json`` (no secrets) and ``credentials.json``
(the registered HTTP users, readable by the owner only). Orthanc merges every ``*.json`` file of
the folder it is started with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError

PLACEHOLDER = "@"


@dataclass(frozen=True)
class DicomModality:
    """A DICOM peer allowed to talk to the site's Orthanc (C-STORE, C-ECHO, C-FIND, C-MOVE).

    Attributes:
        name: symbolic name, e.g. ``"clinical-pacs"``.
        aet: the peer's AE title.
        host: the peer's address (Orthanc checks it: ``DicomCheckModalityHost``).
        port: the peer's own DICOM port (used when Orthanc sends to it).
    """

    name: str
    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, spec: str) -> DicomModality:
        """Parse ``NAME=AET@HOST:PORT`` (or ``AET@HOST:PORT``; the name is then the AET).

        Raises:
            ConfigurationError: with the expected form, when ``spec`` does not match it.
        """
        name, _, rest = spec.rpartition("=")
        aet, sep, hostport = rest.partition("@")
        host, sep2, port = hostport.rpartition(":")
        if not (sep and sep2 and aet and host and port.isdigit()):
            raise ConfigurationError(
                f"DICOM modality {spec!r} is not of the form NAME=AET@HOST:PORT",
                fix="e.g. --allow-modality clinical-pacs=PACS01@10.0.0.5:104")
        return cls(name=name or aet.lower(), aet=aet, host=host, port=int(port))

    def to_orthanc(self) -> dict[str, Any]:
        return {"AET": self.aet, "Host": self.host, "Port": self.port}


@dataclass(frozen=True)
class OrthancConfig:
    """Everything that varies between sites in an Orthanc configuration."""

    name: str
    aet: str
    http_port: int
    dicom_port: int
    storage_dir: Path
    index_dir: Path
    plugins: list[Path]
    username: str
    password: str
    stable_age: int = 10
    index_url: str | None = None  # PostgreSQL for the index (the plugin must be in plugins)
    remote_access: bool = False
    modalities: list[DicomModality] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        return {
            "NAME": self.name,
            "AET": self.aet,
            "HTTP_PORT": self.http_port,
            "DICOM_PORT": self.dicom_port,
            "STORAGE_DIR": str(self.storage_dir),
            "INDEX_DIR": str(self.index_dir),
            "PLUGINS": [str(p) for p in self.plugins],
            "STABLE_AGE": self.stable_age,
            "REMOTE_ACCESS": self.remote_access,
            "MODALITIES": {m.name: m.to_orthanc() for m in self.modalities},
        }


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    """Replace ``"@KEY@"`` strings by their typed value, recursively."""
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str) and node.startswith(PLACEHOLDER) and node.endswith(PLACEHOLDER):
        key = node.strip(PLACEHOLDER)
        if key not in values:
            raise ConfigurationError(f"Orthanc template placeholder {node} has no value",
                                     fix="give every placeholder of orthanc/templates a value")
        return values[key]
    return node


def render(config: OrthancConfig) -> dict[str, Any]:
    """Return the non-secret Orthanc configuration as a dict."""
    template = resources.files("radflow.orthanc").joinpath("templates/orthanc.json").read_text()
    return _substitute(json.loads(template), config.values())


def write_config_dir(config: OrthancConfig, folder: Path) -> Path:
    """Write ``orthanc.json`` and the owner-only ``credentials.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(render(config), indent=2))
    creds = folder / "credentials.json"
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        secret: dict[str, Any] = {"RegisteredUsers": {config.username: config.password}}
        if config.index_url:  # the index plugin's settings hold the database password
            from radflow.postgres import orthanc_settings

            secret["PostgreSQL"] = orthanc_settings(config.index_url)
        json.dump(secret, fh)
    os.chmod(creds, 0o600)
    return folder
