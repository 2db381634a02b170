"""The components of a site: Orthanc, the site's Prefect server, and a process worker.

Each component knows how to start its process, how to tell whether it is healthy, and which
URLs a user should open. The order of ``COMPONENTS`` is the start order; stop goes backwards.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import requests

from radflow.errors import SiteError
from radflow.orthanc.client import OrthancClient
from radflow.orthanc.config import DicomModality, OrthancConfig, write_config_dir
from radflow.settings import RadflowSettings
from radflow.site.config import SiteConfig, SitePaths, SiteSecrets
from radflow.site.process import ManagedProcess

State = Literal["running", "starting", "unhealthy", "stopped"]
PUSH_AET = "RADFLOW"  # the AE title `radflow data push` sends from


@dataclass
class SiteContext:
    """Everything a component needs to know about its site."""

    settings: RadflowSettings
    paths: SitePaths
    config: SiteConfig
    secrets: SiteSecrets

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.orthanc_http}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.prefect}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def catalog_url(self) -> str:
        if self.secrets.catalog_url is not None:
            return self.secrets.catalog_url.get_secret_value()
        return f"sqlite:///{self.paths.root / 'catalog.db'}"

    def orthanc_client(self, timeout: float = 60.0) -> OrthancClient:
        """A client for the site's Orthanc, with the site's credentials."""
        return OrthancClient(self.orthanc_url, *self.orthanc_auth(), timeout=timeout)

    def orthanc_auth(self) -> tuple[str, str]:
        return (self.secrets.orthanc_username, self.secrets.orthanc_password.get_secret_value())

    def prefect_auth(self) -> tuple[str, str]:
        user, _, password = self.secrets.prefect_auth_string.get_secret_value().partition(":")
        return (user, password)

    def base_env(self) -> dict[str, str]:
        """The environment of every site process: the caller's, minus any Prefect settings
        (a user's own PREFECT_API_URL must never point a site process elsewhere)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "RADFLOW_HOME": str(self.paths.home),
            "RADFLOW_SITE": self.config.name,
            "TCP_NODELAY": "1",  # DCMTK (Orthanc, storescu) disables Nagle only with this
            "PREFECT_HOME": str(self.paths.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_COLORS": "false",
        })
        return env

    def prefect_client_env(self) -> dict[str, str]:
        """Settings for a Prefect client (worker, flow runs, CLI) of this site."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string.get_secret_value(),
        }


@dataclass
class ComponentStatus:
    """The health of one component, as `radflow site status` shows it."""

    name: str
    state: State
    pid: int | None = None
    detail: str = ""
    urls: dict[str, str] = field(default_factory=dict)


class Component:
    """Base class: one supervised process with a health check."""

    name: str = ""

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

    def start(self, ctx: SiteContext) -> None:
        self.prepare(ctx)
        argv, env = self.command(ctx)
        self.process(ctx).start(argv, env, cwd=ctx.paths.root)

    def wait_healthy(self, ctx: SiteContext, timeout: float) -> None:
        """Wait until the probe passes; raise SiteError with the log tail if the process dies
        or the timeout passes."""
        proc = self.process(ctx)
        deadline = time.monotonic() + timeout
        detail = "no answer yet"
        while time.monotonic() < deadline:
            if proc.process() is None:
                tail = proc.log_tail(40)
                raise SiteError(
                    f"{self.name} exited during start-up: {_last_error(tail)}\n"
                    f"Last lines of {proc.log_path}:\n{_shorten(tail, 8)}",
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
        pid = self.process(ctx).pid
        if pid is None:
            return ComponentStatus(self.name, "stopped")
        healthy, detail = self.probe(ctx)
        return ComponentStatus(self.name, "running" if healthy else "unhealthy", pid, detail,
                               self.urls(ctx))


_ERROR_LINE = re.compile(r"^([\w.]+(Error|Exception)\b|[EF]\d{4} )")


def _last_error(log: str) -> str:
    """The most telling line of a start-up log: the last Python exception or Orthanc error."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    return (errors or lines or ["(empty log)"])[-1]


def _shorten(log: str, lines: int) -> str:
    return "\n".join(log.splitlines()[-lines:])


class OrthancComponent(Component):
    """Orthanc from Debian's package, configured from ``orthanc/templates``."""

    name = "orthanc"

    def prepare(self, ctx: SiteContext) -> None:
        cfg = ctx.config
        plugin = ctx.settings.orthanc_plugins / "libOrthancDicomWeb.so"
        if not ctx.settings.orthanc_binary.exists():
            raise SiteError(f"Orthanc is not installed ({ctx.settings.orthanc_binary} is missing)",
                            fix="run `make setup` (installs Debian's orthanc package)")
        if not plugin.exists():
            raise SiteError(f"the DICOMweb plugin is missing ({plugin})",
                            fix="run `make setup` (installs Debian's orthanc-dicomweb package)")
        modalities = [DicomModality("radflow-push", PUSH_AET, "127.0.0.1", 11112)]
        modalities += [DicomModality.parse(spec) for spec in cfg.modalities]
        write_config_dir(OrthancConfig(
            name=f"radflow-{cfg.name}",
            aet=cfg.aet,
            http_port=cfg.ports.orthanc_http,
            dicom_port=cfg.ports.orthanc_dicom,
            storage_dir=ctx.paths.orthanc_storage,
            index_dir=ctx.paths.orthanc_index,
            plugins=[plugin],
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
    """The site's own Prefect server (API + UI), loopback only, basic auth on."""

    name = "prefect-server"

    def database_url(self, ctx: SiteContext) -> str:
        if ctx.secrets.database_url is not None:
            return ctx.secrets.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{ctx.paths.prefect_home / 'prefect.db'}"

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
            answer = requests.get(f"{ctx.prefect_api_url}/admin/version",
                                  auth=ctx.prefect_auth(), timeout=3)
            if answer.status_code != 200:
                return False, f"/api/admin/version answered HTTP {answer.status_code}"
            return True, f"Prefect {answer.json()}"
        except (requests.RequestException, ValueError) as exc:
            return False, type(exc).__name__

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"ui": ctx.prefect_url, "api": ctx.prefect_api_url}


def ensure_work_pool(ctx: SiteContext) -> None:
    """Create the site's process work pool on its Prefect server (idempotent)."""
    answer = requests.post(f"{ctx.prefect_api_url}/work_pools/", auth=ctx.prefect_auth(),
                           json={"name": ctx.config.work_pool, "type": "process"}, timeout=10)
    if answer.status_code not in (201, 409):  # 409: the pool exists already
        raise SiteError(f"creating work pool {ctx.config.work_pool} failed: "
                        f"HTTP {answer.status_code} {answer.text[:200]}",
                        fix="check the Prefect server log")


class WorkerComponent(Component):
    """A Prefect process worker serving the site's work pool."""

    name = "worker"

    def worker_name(self, ctx: SiteContext) -> str:
        return f"{ctx.config.name}-worker"

    def prepare(self, ctx: SiteContext) -> None:
        ensure_work_pool(ctx)

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(ctx.prefect_client_env())
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # default 10 s: a slow start for every run
        env["PREFECT_WORKER_HEARTBEAT_SECONDS"] = "10"
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", ctx.config.work_pool,
                "--type", "process", "--name", self.worker_name(ctx)]
        return argv, env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            answer = requests.post(
                f"{ctx.prefect_api_url}/work_pools/{ctx.config.work_pool}/workers/filter",
                auth=ctx.prefect_auth(), json={}, timeout=3)
            workers = {w["name"]: w for w in answer.json()} if answer.status_code == 200 else {}
        except (requests.RequestException, ValueError) as exc:
            return False, type(exc).__name__
        me = workers.get(self.worker_name(ctx))
        if me is None:
            return False, "not yet registered with the work pool"
        if me.get("status") != "ONLINE":
            return False, f"worker is {me.get('status')}"
        proc = self.process(ctx).process()
        beat = me.get("last_heartbeat_time")
        if proc is None or not beat or datetime.fromisoformat(beat).timestamp() < proc.create_time() - 1:
            return False, "waiting for the first heartbeat of this worker process"
        return True, f"online in pool {ctx.config.work_pool}"

    def urls(self, ctx: SiteContext) -> dict[str, str]:
        return {"pool": f"{ctx.prefect_url}/work-pools/work-pool/{ctx.config.work_pool}"}


class WatcherComponent(Component):
    """The change watcher: Orthanc's /changes feed -> ingest flow runs -> catalog."""

    name = "watcher"
    stale_after = 30.0  # seconds without a heartbeat before the watcher counts as stuck

    def heartbeat(self, ctx: SiteContext) -> Path:
        return ctx.paths.run / "watcher.json"

    def prepare(self, ctx: SiteContext) -> None:
        self.heartbeat(ctx).unlink(missing_ok=True)

    def command(self, ctx: SiteContext) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(ctx.prefect_client_env())
        return [sys.executable, "-m", "radflow.watcher", "--site", ctx.config.name], env

    def probe(self, ctx: SiteContext) -> tuple[bool, str]:
        try:
            beat = json.loads(self.heartbeat(ctx).read_text())
        except (FileNotFoundError, ValueError):
            return False, "no heartbeat yet"
        age = time.time() - beat["time"]
        if age > self.stale_after:
            return False, f"last heartbeat {age:.0f} s ago"
        pending = beat["requests"].get("pending", 0) + beat["requests"].get("batched", 0)
        detail = f"cursor {beat['cursor']}, {pending} series queued"
        down = [k for k in ("orthanc", "prefect") if beat.get(k) == "down"]
        if down:
            detail += f", waiting for {' and '.join(down)}"
        return True, detail


COMPONENTS: list[Component] = [OrthancComponent(), PrefectServerComponent(), WorkerComponent(),
                               WatcherComponent()]
