"""A site's persisted configuration (``site.json``), its secrets and its folder layout.

Layout under ``$RADFLOW_HOME/sites/<name>/``::

    site.json           ports, AE title, database URL (no secrets)
    secrets.json        Orthanc user/password, Prefect auth string, database URLs (0600)
    catalog.db          the site catalog (SQLite, unless a catalog URL is set)
    orthanc/config/     rendered Orthanc configuration (credentials.json is 0600)
    orthanc/storage/    DICOM files       orthanc/index/  Orthanc's SQLite index
    prefect/            PREFECT_HOME of the site's Prefect server and worker (SQLite database)
    logs/               one log per component
    run/                PID files
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from radflow.errors import ConfigurationError

SITE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
PORT_BASES = {"orthanc_http": 8042, "orthanc_dicom": 4242, "prefect": 4200, "worklist": 8800,
              "idp": 8900}


class SitePorts(BaseModel):
    """The TCP ports a site listens on."""

    orthanc_http: int = Field(description="Orthanc REST/DICOMweb/Explorer port", examples=[8042])
    orthanc_dicom: int = Field(description="Orthanc DICOM (C-STORE) port", examples=[4242])
    prefect: int = Field(description="the site's Prefect server (API and UI)", examples=[4200])
    worklist: int | None = Field(default=None, description="the site's web app (worklist)",
                                 examples=[8800])
    idp: int | None = Field(default=None, description="the embedded OpenID provider",
                            examples=[8900])


class OidcConfig(BaseModel):
    """Who logs people in to the site's web app: the embedded provider (issuer None) or any
    OpenID Connect issuer (its client secret is kept in ``secrets.json``)."""

    issuer: str | None = Field(default=None, description="an external issuer URL; None: the "
                               "site's embedded provider", examples=["https://sso.example.org/realms/radiology"])
    client_id: str = Field(default="radflow-worklist", description="the web app's client id")
    roles_claim: str = Field(default="groups", description="the ID-token/userinfo claim that "
                             "lists the user's roles", examples=["groups", "realm_roles"])
    session_hours: float = Field(default=8.0, gt=0, description="sessions expire after this")
    public_url: str | None = Field(default=None, description="the web app's address as browsers "
                                   "reach it, when served beyond loopback (behind TLS); None: "
                                   "http://127.0.0.1:<worklist port>",
                                   examples=["https://radflow.uk-essen.example"])


class SiteConfig(BaseModel):
    """What ``radflow site up`` records about a site (``site.json``). Holds no secrets."""

    name: str = Field(description="site name: lower-case letters, digits and dashes", examples=["lab"])
    aet: str = Field(description="Orthanc's DICOM AE title, derived from the name", examples=["LAB"])
    ports: SitePorts
    stable_age: int = Field(default=10, description="seconds without new instances before "
                            "Orthanc calls a series stable")
    modalities: list[str] = Field(default_factory=list, description="DICOM peers allowed to "
                                  "store, as NAME=AET@HOST:PORT")
    oidc: OidcConfig = Field(default_factory=lambda: OidcConfig())
    work_pool_type: Literal["process", "docker", "kubernetes"] = Field(
        default="process", description="where flow runs execute: subprocesses of the site's "
        "worker, a container each (prefect-docker) or a Kubernetes Job each (docs/containers.md)")
    image_registry: str = Field(default="ghcr.io/radflow", description="where the container "
                                "pools pull radflow's images from")
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        check_site_name(value)
        return value

    @property
    def work_pool(self) -> str:
        return f"{self.name}-{self.work_pool_type}"


class SiteSecrets(BaseModel):
    """Generated credentials of a site (``secrets.json``, owner-only)."""

    orthanc_username: str = "radflow"
    orthanc_password: SecretStr
    prefect_auth_string: SecretStr  # "user:password" for the site's Prefect server
    database_url: SecretStr | None = None  # Prefect on PostgreSQL; None: SQLite in the site folder
    catalog_url: SecretStr | None = None  # catalog on PostgreSQL; None: SQLite in the site folder
    orthanc_index_url: SecretStr | None = None  # Orthanc's index on PostgreSQL; None: SQLite
    web_session_key: SecretStr | None = None  # unused since sessions live on the server
    oidc_client_secret: SecretStr | None = None  # the web app's secret at the OIDC provider
    idp_secret_key: SecretStr | None = None  # the embedded provider's own session key
    demo_users: dict[str, SecretStr] = Field(default_factory=dict)  # embedded provider's users

    def with_web_secrets(self) -> SiteSecrets:
        """These secrets, with the web app's generated where missing (sites made before the
        web app existed get them on their next start)."""
        update = {k: SecretStr(secrets.token_urlsafe(32)) for k in
                  ("web_session_key", "oidc_client_secret", "idp_secret_key")
                  if getattr(self, k) is None}
        missing = [user for user in DEMO_USERS if user not in self.demo_users]
        if missing:  # sites made before a demo user existed get it on their next start
            update["demo_users"] = {**self.demo_users,
                                    **{user: SecretStr(secrets.token_urlsafe(12))
                                       for user in missing}}
        return self.model_copy(update=update) if update else self

    @classmethod
    def generate(cls) -> SiteSecrets:
        return cls(
            orthanc_password=SecretStr(secrets.token_urlsafe(24)),
            prefect_auth_string=SecretStr("radflow:" + secrets.token_urlsafe(24)),
        )


# The embedded provider's demo users and their roles (groups).
DEMO_USERS = {"radiologist": ("radiologist",), "steward": ("data-steward",),
              "researcher": ("researcher",), "admin": ("admin",)}


def check_site_name(name: str) -> str:
    """Validate a site name (it becomes a folder, an AE title and a work pool name)."""
    if not SITE_NAME.match(name):
        raise ConfigurationError(
            f"site name {name!r} is not valid: expected 1-24 characters, lower-case letters, "
            "digits and dashes, starting with a letter",
            fix="choose a name like 'lab' or 'uk-essen'",
        )
    return name


def aet_for(name: str) -> str:
    """The DICOM AE title of a site: its name upper-cased, dashes as underscores, 16 chars."""
    return name.upper().replace("-", "_")[:16]


class SitePaths:
    """Where one site keeps its state."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.root = home / "sites" / name

    @property
    def config_file(self) -> Path:
        return self.root / "site.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def orthanc_config(self) -> Path:
        return self.root / "orthanc" / "config"

    @property
    def orthanc_storage(self) -> Path:
        return self.root / "orthanc" / "storage"

    @property
    def orthanc_index(self) -> Path:
        return self.root / "orthanc" / "index"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def warm_socket(self) -> Path:
        """Where the worker's fork server listens (:mod:`radflow.forkserver`)."""
        from radflow.forkserver import SOCKET_NAME

        return self.run / SOCKET_NAME

    def make(self) -> None:
        for folder in (self.root, self.orthanc_config, self.orthanc_storage, self.orthanc_index,
                       self.prefect_home, self.logs, self.run):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)


def load_config(paths: SitePaths) -> SiteConfig | None:
    """The site's recorded configuration, or None for a site never started."""
    if not paths.config_file.exists():
        return None
    try:
        return SiteConfig.model_validate_json(paths.config_file.read_text())
    except ValueError as exc:
        raise ConfigurationError(
            f"{paths.config_file} is not a valid site configuration: {exc}",
            fix="repair the file or remove the site folder to start afresh",
        ) from exc


def save_config(paths: SitePaths, config: SiteConfig) -> None:
    paths.config_file.write_text(config.model_dump_json(indent=2))


def load_or_create_secrets(paths: SitePaths) -> SiteSecrets:
    """Read the site's secrets, generating them (owner-only file) on first use."""
    if paths.secrets_file.exists():
        mode = paths.secrets_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigurationError(
                f"{paths.secrets_file} is readable by others (mode {oct(mode)})",
                fix=f"chmod 600 {paths.secrets_file}",
            )
        return SiteSecrets.model_validate_json(paths.secrets_file.read_text())
    secrets_ = SiteSecrets.generate()
    save_secrets(paths, secrets_)
    return secrets_


def save_secrets(paths: SitePaths, secrets_: SiteSecrets) -> None:
    """Write ``secrets.json`` readable by the owner only (created 0600, never wider)."""
    def plain(v):
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    values = {k: plain(v) for k, v in secrets_.model_dump().items()}
    tmp = paths.secrets_file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(values))
    os.replace(tmp, paths.secrets_file)


def all_sites(home: Path) -> list[str]:
    """Names of the sites that have a folder under ``home``."""
    base = home / "sites"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "site.json").exists())


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Serialize port allocation and site creation across radflow processes."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` (checked on all interfaces, as Orthanc binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


RESERVED_SECONDS = 600.0  # how long a chosen port stays out of other homes' choices


@contextmanager
def port_reservations() -> Iterator[dict[int, float]]:
    """The ports radflow processes of this user chose in the last ten minutes, machine-wide
    (every home): between a site's or hub's choice of a free port and its server's bind, another
    home's site must not choose the same one (two homes starting at once, e.g. test sessions).

    Yields ``{port: chosen at}`` (epoch seconds), under a lock; what the caller adds is kept.
    The file is the user's own in the temporary folder; if another user holds its name, no
    reservation is shared (each home still checks that a port is free)."""
    base = Path(tempfile.gettempdir()) / f"radflow-ports-{os.getuid()}"
    try:
        fd = os.open(f"{base}.json", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield {}
        return
    with os.fdopen(fd, "r+") as fh:
        if os.fstat(fd).st_uid != os.getuid():
            yield {}
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            try:
                held = {int(k): float(v) for k, v in json.loads(fh.read() or "{}").items()}
            except (ValueError, AttributeError):  # a damaged file: start afresh
                held = {}
            now = time.time()
            held = {port: at for port, at in held.items() if now - at < RESERVED_SECONDS}
            yield held
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(held))
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def first_free_port(base: int, taken: set[int], reserved: dict[int, float], what: str) -> int:
    """The first port from ``base`` on that is not in ``taken``, not reserved by another home
    and free; reserved from now on."""
    port = base
    while port in taken or port in reserved or not port_is_free(port):
        port += 1
        if port > 65535:
            raise ConfigurationError(f"no free TCP port above {base} for {what}",
                                     fix="stop other services or pass the port explicitly")
    reserved[port] = time.time()
    return port


def allocate_ports(home: Path, requested: dict[str, int | None],
                   current: SitePorts | None = None) -> SitePorts:
    """Pick ports for a site: the requested ones, then those it has, else the first free ones
    from the conventional bases (8042, 4242, 4200, 8800, 8900) that no other site of ``home``
    has recorded and no other home chose in the last minutes (:func:`port_reservations`). A
    site made before a component existed gets that component's port here."""
    taken = set()
    for other in all_sites(home):
        cfg = load_config(SitePaths(home, other))
        if cfg:
            taken.update(v for v in cfg.ports.model_dump().values() if v)
    have = current.model_dump() if current is not None else {}
    chosen: dict[str, int] = {}
    with port_reservations() as reserved:
        for key, base in PORT_BASES.items():
            want = requested.get(key) or have.get(key)
            chosen[key] = want or first_free_port(base, taken, reserved, key)
            taken.add(chosen[key])
    return SitePorts(**chosen)
