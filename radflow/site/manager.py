"""Bring a site up, report its health, bring it down.

Example:
    ```python
    from radflow.site import SiteManager

    manager = SiteManager()
    status = manager.up("lab")          # Orthanc, Prefect server, worker; blocks registered
    print(status.component("orthanc").urls["explorer"])
    manager.down("lab")
    ```
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from radflow.errors import ConfigurationError, RadflowError, SiteError
from radflow.postgres import check_url
from radflow.prefect_api import outside_event_loop
from radflow.settings import RadflowSettings, get_settings
from radflow.site.components import Component, ComponentStatus, component, site_components
from radflow.site.config import (
    OidcConfig,
    SiteConfig,
    SitePaths,
    aet_for,
    all_sites,
    allocate_ports,
    check_site_name,
    home_lock,
    load_config,
    load_or_create_secrets,
    port_is_free,
    save_config,
    save_secrets,
)
from radflow.site.context import SiteContext
from radflow.site.process import lifecycle_lock
from radflow.site.startup import start_components
from radflow.site.workpools import check_pool_type

logger = logging.getLogger(__name__)
# the site's databases (secrets.json keys) and what each holds
DATABASES = {"database_url": "Prefect database", "catalog_url": "catalog",
             "orthanc_index_url": "Orthanc index"}
Progress = Callable[[str], None]

@dataclass
class SiteStatus:
    """The health of a whole site."""

    name: str
    state: str  # "running", "degraded" or "stopped"
    root: Path
    components: list[ComponentStatus]

    def component(self, name: str) -> ComponentStatus:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "root": str(self.root),
                "components": [asdict(c) for c in self.components]}


def _overall(components: list[ComponentStatus]) -> str:
    states = {c.state for c in components}
    if states == {"running"}:
        return "running"
    if states == {"stopped"}:
        return "stopped"
    return "degraded"


class SiteManager:
    """Manage the sites under one RADFLOW_HOME."""

    def __init__(self, settings: RadflowSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self.home = self.settings.home_dir

    def sites(self) -> list[str]:
        """Names of all sites created under this RADFLOW_HOME."""
        return all_sites(self.home)

    def resolve(self, name: str | None) -> str:
        """The site a command is for: ``name``, else the only site under RADFLOW_HOME.

        Raises:
            ConfigurationError: no name and no site, or several (the message lists them).
        """
        if name:
            return check_site_name(name)
        known = self.sites()
        if len(known) == 1:
            return known[0]
        if not known:
            raise ConfigurationError(f"there is no site under {self.home}",
                                     fix="create one with `radflow site up --site NAME`, or set "
                                         "RADFLOW_HOME")
        raise ConfigurationError(f"{len(known)} sites under {self.home} ({', '.join(known)}): "
                                 "which one?", fix=f"pass --site, e.g. --site {known[0]}")

    def context(self, name: str) -> SiteContext:
        """The context of an existing site.

        Raises:
            ConfigurationError: no site of that name was ever started here.
        """
        check_site_name(name)
        paths = SitePaths(self.home, name)
        config = load_config(paths)
        if config is None:
            known = ", ".join(self.sites()) or "none"
            raise ConfigurationError(
                f"there is no site {name!r} under {self.home} (sites: {known})",
                fix=f"create it with `radflow site up --site {name}`, or set RADFLOW_HOME",
            )
        return SiteContext(self.settings, paths, config, load_or_create_secrets(paths))

    def _create_or_update(self, name: str, ports: dict[str, int | None],
                          databases: dict[str, str | None], stable_age: int | None,
                          modalities: list[str] | None,
                          oidc: dict[str, Any] | None = None,
                          oidc_client_secret: str | None = None,
                          pool: dict[str, str | None] | None = None) -> SiteContext:
        check_site_name(name)
        paths = SitePaths(self.home, name)
        with home_lock(self.home):
            paths.make()
            config = load_config(paths)
            if config is None:
                config = SiteConfig(name=name, aet=aet_for(name),
                                    ports=allocate_ports(self.home, ports))
            else:
                config = config.model_copy(update={
                    "ports": allocate_ports(self.home, ports, current=config.ports)})
            if stable_age is not None:
                config.stable_age = stable_age
            if modalities is not None:
                config.modalities = list(modalities)
            for key, value in (pool or {}).items():
                if value is not None:
                    setattr(config, key, check_pool_type(value) if key == "work_pool_type"
                            else value)
            if oidc:
                update = dict(oidc)
                if update.get("issuer") == "":
                    update["issuer"] = None
                config.oidc = OidcConfig.model_validate(config.oidc.model_dump() | update)
            save_config(paths, config)
            secrets_ = load_or_create_secrets(paths)
            if oidc_client_secret:
                secrets_ = secrets_.model_copy(update={
                    "oidc_client_secret": SecretStr(oidc_client_secret)})
                save_secrets(paths, secrets_)
            completed = secrets_.with_web_secrets()
            if completed is not secrets_:
                secrets_ = completed
                save_secrets(paths, secrets_)
            changed = {key: SecretStr(check_url(url, DATABASES[key])) if url
                       else None for key, url in (databases or {}).items() if url is not None}
            if changed:  # kept with the secrets: a database URL holds a password
                secrets_ = secrets_.model_copy(update=changed)
                save_secrets(paths, secrets_)
        return SiteContext(self.settings, paths, config, secrets_)

    def up(
        self,
        name: str,
        *,
        ports: dict[str, int | None] | None = None,
        database_url: str | None = None,
        catalog_url: str | None = None,
        orthanc_index_url: str | None = None,
        stable_age: int | None = None,
        modalities: list[str] | None = None,
        oidc: dict[str, Any] | None = None,
        oidc_client_secret: str | None = None,
        work_pool_type: str | None = None,
        image_registry: str | None = None,
        progress: Progress | None = None,
    ) -> SiteStatus:
        """Start every component of the site that is not running, and wait until all are healthy.

        On a running site, a healthy component stays as it is; one that is still starting is
        waited for; one that is stuck (unhealthy longer than the start timeout) is restarted.
        What fails then is reported, and only what this call started is stopped again: a
        running site is never stopped. A site that was not running and fails half-way is
        stopped entirely. The error names the component, its log and the fix.

        Args:
            name: the site name (a new one is created with free ports).
            ports: explicit ports (keys ``orthanc_http``, ``orthanc_dicom``, ``prefect``).
            database_url: PostgreSQL URL for the site's Prefect server ("" for SQLite).
            catalog_url: PostgreSQL URL for the site's catalog ("" for SQLite).
            orthanc_index_url: PostgreSQL URL for Orthanc's index (Debian's orthanc-postgresql
                plugin; "" for SQLite). Changing it starts Orthanc on an empty index.
            stable_age: seconds after the last instance before Orthanc calls a series stable.
            modalities: DICOM peers allowed to C-STORE, as ``NAME=AET@HOST:PORT``.
            oidc: web app log-in settings (:class:`OidcConfig` fields; issuer "" for the
                embedded provider).
            oidc_client_secret: the web app's client secret at an external issuer.
            work_pool_type: ``process``, ``docker`` or ``kubernetes`` (docs/containers.md).
            image_registry: where container pools pull radflow's images from.
            progress: called with one line per step.

        Raises:
            SiteError: a component failed to start (everything was stopped again).
        """
        say = progress or (lambda _msg: None)
        running = {c.name for c in self.status(name).components if c.state != "stopped"} \
            if name in self.sites() else set()
        databases = {"database_url": database_url, "catalog_url": catalog_url,
                     "orthanc_index_url": orthanc_index_url}
        pool = {"work_pool_type": work_pool_type, "image_registry": image_registry}
        if running and (any((ports or {}).values()) or any(v is not None for v in
                                                            databases.values()) or oidc
                        or oidc_client_secret or any(v is not None for v in pool.values())):
            raise ConfigurationError(
                f"site {name!r} is running ({', '.join(sorted(running))}); its ports, databases, "
                "work pool and log-in settings cannot change while it runs",
                fix=f"run `radflow site down --site {name}` first",
            )
        ctx = self._create_or_update(name, ports or {}, databases, stable_age, modalities,
                                     oidc, oidc_client_secret, pool)
        if not running:  # restart counts start again with the site
            from radflow.site.supervisor import restarts_file

            restarts_file(ctx.paths.run).unlink(missing_ok=True)
        with lifecycle_lock(ctx.paths.run):  # the supervisor waits while the site starts
            started: list[Component] = []
            try:
                from radflow.catalog.migrate import upgrade

                say(f"catalog: schema revision {upgrade(ctx.catalog_url)}")
                self._start_all(ctx, say, started)
                from radflow.site.upgrade import record_version

                record_version(ctx.paths.root)  # what `radflow site upgrade` upgrades from
            except Exception as exc:
                # a running site keeps running: only what this call started stops again
                stopped = [p.name for p in reversed(started) if p.process(ctx).stop()] \
                    if running else self._stop_all(ctx)
                message = exc.message if isinstance(exc, RadflowError) else f"{type(exc).__name__}: {exc}"
                fix = exc.fix if isinstance(exc, RadflowError) else (
                    f"read the logs in {ctx.paths.logs} and run `radflow site up --site {name}` again")
                raise SiteError(
                    f"site {name!r} failed to start: {message}\n"
                    f"Stopped again: {', '.join(stopped) or 'nothing'}"
                    + (" (the components that were running before still run)." if running
                       else "."), fix=fix,
                ) from exc
        return self.status(name)

    def _start_all(self, ctx: SiteContext, say: Progress, started: list[Component]) -> None:
        """Start the site's enabled components, side by side where their dependencies allow
        (:mod:`radflow.site.startup`); a busy port is found before anything starts. What this
        call started (or started again) is appended to ``started``."""
        parts = [p for p in site_components() if p.enabled(ctx)]
        for part in parts:
            if part.process(ctx).process() is None:
                self._check_ports(ctx, part)
        said = threading.Lock()

        def say_once(message: str) -> None:  # lines from parallel starts never interleave
            with said:
                say(message)

        def bring_up(part: Component, abandon: threading.Event) -> None:
            if self._start_one(ctx, part, say_once, abandon):
                with said:
                    started.append(part)
            outside_event_loop(part.after_healthy, ctx, say_once)

        start_components(parts, bring_up)

    @staticmethod
    def _check_ports(ctx: SiteContext, part: Component) -> None:
        for key, option in part.ports.items():
            port = getattr(ctx.config.ports, key)
            if not port_is_free(port):
                raise SiteError(
                    f"port {port} for {part.name} ({key}) is already in use",
                    fix=f"stop whatever listens on {port}, or choose another port with "
                    f"`radflow site up --site {ctx.config.name} {option} N`",
                )

    def _start_one(self, ctx: SiteContext, part: Component, say: Progress,
                   abandon: threading.Event | None = None) -> bool:
        """Make one component healthy; returns whether this call started it (or started it
        again). A running component that is healthy stays; one younger than the start timeout
        is waited for (it is starting, e.g. the supervisor just restarted it); an older one
        that is unhealthy is stuck, and is restarted."""
        proc = part.process(ctx)
        running = proc.process()
        if running is not None:
            healthy, detail = part.probe(ctx)
            if healthy:
                say(f"{part.name}: already running")
                return False
            timeout = self.settings.start_timeout
            if time.time() - running.create_time() < timeout:
                say(f"{part.name}: running, waiting until healthy")
                part.wait_healthy(ctx, timeout, abandon)
                say(f"{part.name}: healthy")
                return False
            say(f"{part.name}: running but not healthy ({detail}): restarting it")
            logger.warning("%s of site %s is not healthy (%s): restarting it", part.name,
                           ctx.config.name, detail)
            proc.stop(timeout=5.0)  # stuck: little grace
        else:
            self._check_ports(ctx, part)
            say(f"{part.name}: starting")
        part.start(ctx)
        part.wait_healthy(ctx, self.settings.start_timeout, abandon)
        say(f"{part.name}: healthy")
        return True

    def _stop_all(self, ctx: SiteContext) -> list[str]:
        """Stop every component, dependents before what they depend on; components that no
        running component depends on stop side by side."""
        parts = site_components()
        remaining = {p.name: p for p in parts}
        stopped: list[str] = []
        supervisor = remaining.pop("supervisor", None)
        if supervisor is not None and supervisor.process(ctx).stop():  # first: it restarts
            stopped.append(supervisor.name)
        while remaining:
            needed = {d for p in remaining.values() for d in p.depends_on}
            wave = [p for name, p in remaining.items() if name not in needed] or \
                list(remaining.values())
            with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                results = list(pool.map(lambda p: p.process(ctx).stop(), wave))
            stopped += [p.name for p, was in zip(wave, results, strict=True) if was]
            for p in wave:
                remaining.pop(p.name)
        return stopped

    def restart(self, name: str, part_name: str) -> ComponentStatus:
        """Stop and start one component of a running site, and wait until it is healthy."""
        ctx = self.context(name)
        part = component(part_name)
        with lifecycle_lock(ctx.paths.run):
            part.process(ctx).stop()
            part.start(ctx)
            part.wait_healthy(ctx, self.settings.start_timeout)
        return part.status(ctx)

    def down(self, name: str) -> list[str]:
        """Stop every component of the site; returns the names of those that were running."""
        ctx = self.context(name)
        with lifecycle_lock(ctx.paths.run):
            return self._stop_all(ctx)

    def status(self, name: str) -> SiteStatus:
        """Probe each component of the site."""
        ctx = self.context(name)
        components = [c.status(ctx) for c in site_components() if c.enabled(ctx)]
        return SiteStatus(name, _overall(components), ctx.paths.root, components)
