"""The components of a site: each one supervised process that declares what the manager needs.

A component declares its ports (with the ``site up`` option that changes each), the components
it depends on, how to start it, how to probe its health, the URLs a user opens, and a hook run
once it is healthy. The manager starts them in dependency order and stops them in reverse; it has
no special case for any component, so a plugin adds one (the worklist, an identity provider, the
site agent) by declaring it in ``Plugin.components``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests

from radflow.errors import RadflowError, SiteError
from radflow.orthanc.config import DicomModality, OrthancConfig, write_config_dir
from radflow.site.context import SiteContext
from radflow.site.process import ManagedProcess

State = Literal["running", "starting", "unhealthy", "stopped"]
PUSH_AET = "RADFLOW"  # the AE title `radflow data push` sends from
Say = Callable[[str], None]


@dataclass
class ComponentStatus:
    """The health of one component, as `radflow site status` shows it."""

    name: str
    state: State
    pid: int | None = None
    detail: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    restarts: int = 0  # by the supervisor, since the site was started
    restart_error: str | None = None  # why the last restart failed, if it did


class Component:
    """Base class: one supervised process with a health check.

    Attributes:
        name: the component's name (``orthanc``, ``worker``...).
        ports: port key in ``site.json`` -> the ``radflow site up`` option that sets it.
        depends_on: components that must be healthy before this one starts.
    """

    name: str = ""
    ports: ClassVar[dict[str, str]] = {}
    depends_on: tuple[str, ...] = ()

    def enabled(self, ctx: SiteContext) -> bool:
        """Whether this site runs the component (e.g. no embedded OpenID provider when the site
        uses an external one)."""
        return True

    def process(self, ctx: SiteContext) -> ManagedProcess:
        return ManagedProcess(self.name, ctx.paths.run, ctx.paths.logs / f"{self.name}.log")

    def prepare(self, ctx: SiteContext) -> None:
        """Write configuration, create resources; runs before each start."""

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        """One health check: (healthy, detail)."""
        raise NotImplementedError

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {}

    def after_healthy(self, ctx: SiteContext, say: Say) -> None:
        """Runs each time `site up` finds or makes this component healthy."""

    def start(self, ctx: SiteContext) -> None:
        self.prepare(ctx)
        argv, env = self.command(ctx)
        self.process(ctx).start(argv, env, cwd=ctx.paths.root)

    def wait_healthy(self, ctx: SiteContext, timeout: float, abandon: Any = None) -> None:
        """Wait until the probe passes; raise SiteError with the log tail if the process dies
        or the timeout passes, or once ``abandon`` (an Event: another part failed) is set."""
        proc = self.process(ctx)
        deadline = time.monotonic() + timeout
        detail = "no answer yet"
        while time.monotonic() < deadline:
            if abandon is not None and abandon.is_set():
                raise SiteError(f"{self.name}: start abandoned", fix="see the first error")
            if proc.process() is None:
                raise SiteError(
                    f"{self.name} exited during start-up: {proc.last_error()}\n"
                    f"Last lines of {proc.log_path}:\n{proc.log_tail(8)}",
                    fix=f"read {proc.log_path}; fix the cause and run `radflow site up` again",
                )
            healthy, detail = self.probe(ctx)
            if healthy:
                return
            time.sleep(0.25)
        raise SiteError(
            f"{self.name} did not become healthy within {timeout:.0f} s ({detail}). "
            f"Last lines of {proc.log_path}:\n{proc.log_tail()}",
            fix="raise RADFLOW_START_TIMEOUT on a slow machine, or read the log",
        )

    def status(self, ctx: SiteContext) -> ComponentStatus:
        from radflow.site.supervisor import read_restarts

        record = read_restarts(ctx.paths.run).get(self.name, {})
        restarts = {"restarts": int(record.get("count", 0)),
                    "restart_error": record.get("error")}
        pid = self.process(ctx).pid
        if pid is None:
            return ComponentStatus(self.name, "stopped", **restarts)
        healthy, detail = self.probe(ctx)
        return ComponentStatus(self.name, "running" if healthy else "unhealthy", pid, detail,
                               self.urls(ctx), **restarts)


class OrthancComponent(Component):
    """Orthanc from Debian's package, configured from ``orthanc/templates``."""

    name = "orthanc"
    ports: ClassVar[dict[str, str]] = {"orthanc_http": "--orthanc-http-port",
                                       "orthanc_dicom": "--orthanc-dicom-port"}

    def prepare(self, ctx: SiteContext) -> None:
        cfg = ctx.config
        plugin = ctx.settings.orthanc_plugins / "libOrthancDicomWeb.so"
        if not ctx.settings.orthanc_binary.exists():
            raise SiteError(f"Orthanc is not installed ({ctx.settings.orthanc_binary} is missing)",
                            fix="run `make setup` (installs Debian's orthanc package)")
        if not plugin.exists():
            raise SiteError(f"the DICOMweb plugin is missing ({plugin})",
                            fix="run `make setup` (installs Debian's orthanc-dicomweb package)")
        plugins = [plugin]
        index_url = ctx.secrets.orthanc_index_url
        if index_url is not None:
            plugins.append(ctx.settings.orthanc_plugins / "libOrthancPostgreSQLIndex.so")
            if not plugins[-1].exists():
                raise SiteError(f"Orthanc's PostgreSQL plugin is missing ({plugins[-1]})",
                                fix="sudo apt-get install orthanc-postgresql  (or make setup)")
        modalities = [DicomModality("radflow-push", PUSH_AET, "127.0.0.1", 11112)]
        modalities += [DicomModality.parse(spec) for spec in cfg.modalities]
        write_config_dir(OrthancConfig(
            name=f"radflow-{cfg.name}",
            aet=cfg.aet,
            http_port=cfg.ports.orthanc_http,
            dicom_port=cfg.ports.orthanc_dicom,
            storage_dir=ctx.paths.orthanc_storage,
            index_dir=ctx.paths.orthanc_index,
            plugins=plugins,
            index_url=index_url.get_secret_value() if index_url is not None else None,
            username=ctx.secrets.orthanc_username,
            password=ctx.secrets.orthanc_password.get_secret_value(),
            stable_age=cfg.stable_age,
            modalities=modalities,
        ), ctx.paths.orthanc_config)

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        return [str(ctx.settings.orthanc_binary), str(ctx.paths.orthanc_config)], ctx.base_env()

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            answer = requests.get(f"{ctx.orthanc_url}/system", auth=ctx.orthanc_auth(), timeout=3)
            if answer.status_code != 200:
                return False, f"/system answered HTTP {answer.status_code}"
            plugins = requests.get(f"{ctx.orthanc_url}/plugins", auth=ctx.orthanc_auth(), timeout=3)
            if "dicom-web" not in plugins.json():
                return False, "the DICOMweb plugin is not loaded"
            return True, f"Orthanc {answer.json().get('Version', '?')}"
        except (requests.RequestException, ValueError) as exc:
            return False, type(exc).__name__

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {
            "explorer": f"{ctx.orthanc_url}/app/explorer.html",
            "rest": ctx.orthanc_url,
            "dicomweb": f"{ctx.orthanc_url}/dicom-web/",
            "dicom": f"{ctx.config.aet}@127.0.0.1:{ctx.config.ports.orthanc_dicom}",
        }


class PrefectServerComponent(Component):
    """The site's own Prefect server (API + UI), loopback only, basic auth on. Once healthy it
    gets the site's work pool, blocks and deployments."""

    name = "prefect-server"
    ports: ClassVar[dict[str, str]] = {"prefect": "--prefect-port"}

    def database_url(self, ctx: SiteContext) -> str:
        if ctx.secrets.database_url is not None:
            from radflow.postgres import async_url

            return async_url(ctx.secrets.database_url.get_secret_value())
        return f"sqlite+aiosqlite:///{ctx.paths.prefect_home / 'prefect.db'}"

    def prepare(self, ctx: SiteContext) -> None:
        """A new SQLite database starts as a copy of Prefect's migrated schema
        (:mod:`radflow.prefect_db`): the first start answers 5 s sooner."""
        if ctx.secrets.database_url is None:
            from radflow.prefect_db import seed

            seed(ctx.paths.prefect_home / "prefect.db")

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update({
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url(ctx),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(ctx.config.ports.prefect),
            "PREFECT_SERVER_API_AUTH_STRING": ctx.secrets.prefect_auth_string.get_secret_value(),
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_UI_API_URL": ctx.prefect_api_url,
        })
        argv = [sys.executable, "-m", "prefect", "server", "start",
                "--host", "127.0.0.1", "--port", str(ctx.config.ports.prefect)]
        return argv, env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            return True, f"Prefect {ctx.prefect(timeout=3).version()}"
        except RadflowError as exc:
            return False, exc.message[:120]

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"ui": ctx.prefect_url, "api": ctx.prefect_api_url}

    def after_healthy(self, ctx: SiteContext, say: Say) -> None:
        """The work pool, the blocks and the deployments, before the worker and the watcher."""
        from radflow.deployments import apply_site_deployments
        from radflow.site.registration import register_site_blocks
        from radflow.site.workpools import ensure_site_pool

        ensure_site_pool(ctx)
        register_site_blocks(ctx)
        say("blocks: registered")
        say(f"deployments: {', '.join(apply_site_deployments(ctx))}")


class WorkerComponent(Component):
    """A Prefect worker serving the site's work pool (a process worker by default; a docker or
    kubernetes worker for those pool types)."""

    name = "worker"
    depends_on = ("prefect-server",)

    def worker_name(self, ctx: SiteContext) -> str:
        return f"{ctx.config.name}-worker"

    def prepare(self, ctx: SiteContext) -> None:
        from radflow.site.workpools import ensure_site_pool

        ensure_site_pool(ctx)

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(ctx.prefect_client_env())
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # default 10 s: a slow start for every run
        env["PREFECT_WORKER_HEARTBEAT_SECONDS"] = "10"
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", ctx.config.work_pool,
                "--type", ctx.config.work_pool_type, "--name", self.worker_name(ctx)]
        if ctx.config.work_pool_type == "process":  # its runs fork from a warm process
            argv = [sys.executable, "-m", "radflow.forkserver", "--socket",
                    str(ctx.paths.warm_socket), "--", *argv]
        return argv, env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            me = ctx.prefect(timeout=3).workers(ctx.config.work_pool).get(self.worker_name(ctx))
        except RadflowError as exc:
            return False, exc.message[:120]
        if me is None:
            return False, "not yet registered with the work pool"
        if me.status != "ONLINE":
            return False, f"worker is {me.status}"
        proc = self.process(ctx).process()
        if proc is None or me.last_heartbeat is None or \
                me.last_heartbeat.timestamp() < proc.create_time() - 1:
            return False, "waiting for the first heartbeat of this worker process"
        return True, f"online in pool {ctx.config.work_pool}"

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"pool": f"{ctx.prefect_url}/work-pools/work-pool/{ctx.config.work_pool}"}


class ServiceComponent(Component):
    """A radflow service loop (:mod:`radflow.service`) run as ``python -m MODULE --site NAME``;
    healthy while it rewrites its heartbeat file."""

    module: str = ""
    stale_after = 30.0  # seconds without a heartbeat before the service counts as stuck

    def heartbeat(self, ctx: SiteContext) -> Path:
        return ctx.paths.run / f"{self.name}.json"

    def prepare(self, ctx: SiteContext) -> None:
        self.heartbeat(ctx).unlink(missing_ok=True)

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(ctx.prefect_client_env())
        return [sys.executable, "-m", self.module, "--site", ctx.config.name], env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            beat = json.loads(self.heartbeat(ctx).read_text())
        except (FileNotFoundError, ValueError):
            return False, "no heartbeat yet"
        age = time.time() - beat["time"]
        if age > self.stale_after:
            return False, f"last heartbeat {age:.0f} s ago"
        detail = beat.get("detail", "")
        down = sorted(k for k, v in beat.get("dependencies", {}).items() if v == "down")
        if down:
            detail += f"{', ' if detail else ''}waiting for {' and '.join(down)}"
        return True, detail


class WatcherComponent(ServiceComponent):
    """The change watcher: Orthanc's /changes feed -> ingest flow runs -> catalog."""

    name = "watcher"
    module = "radflow.watcher"
    depends_on = ("orthanc", "prefect-server")


class SupervisorComponent(ServiceComponent):
    """Restarts components that die (:mod:`radflow.site.supervisor`); started after every
    other component, stopped before them."""

    name = "supervisor"
    module = "radflow.site.supervisor"
    depends_on = ("orthanc", "prefect-server", "worker", "watcher")

    def process(self, ctx: SiteContext) -> ManagedProcess:
        proc = super().process(ctx)
        proc.stop_children = False  # the components it restarted stop on their own
        return proc


CORE_COMPONENTS: tuple[Component, ...] = (OrthancComponent(), PrefectServerComponent(),
                                          WorkerComponent(), WatcherComponent(),
                                          SupervisorComponent())


def site_components() -> list[Component]:
    """Every component of a site: core's, then those of the installed plugins, in an order
    where each comes after what it depends on.

    Raises:
        SiteError: a dependency is unknown or the dependencies form a cycle.
    """
    from radflow.plugins import plugins

    declared = list(CORE_COMPONENTS) + [c for p in plugins() for c in p.components]
    by_name = {c.name: c for c in declared}
    ordered: list[Component] = []
    visiting: set[str] = set()

    def visit(component: Component) -> None:
        if component in ordered:
            return
        if component.name in visiting:
            raise SiteError(f"site components depend on each other in a cycle at "
                            f"{component.name!r}", fix="fix the plugin's depends_on")
        visiting.add(component.name)
        for dep in component.depends_on:
            if dep not in by_name:
                raise SiteError(f"component {component.name!r} depends on unknown {dep!r}",
                                fix="install the plugin that provides it")
            visit(by_name[dep])
        visiting.discard(component.name)
        ordered.append(component)

    for component in declared:
        visit(component)
    return sorted(ordered, key=lambda c: c.name == "supervisor")  # last (a stable sort)


def component(name: str) -> Component:
    """A component by name.

    Raises:
        ConfigurationError: no such component (the message lists them).
    """
    from radflow.errors import ConfigurationError

    for c in site_components():
        if c.name == name:
            return c
    raise ConfigurationError(f"unknown component {name!r}",
                             fix=f"use one of {', '.join(c.name for c in site_components())}")
