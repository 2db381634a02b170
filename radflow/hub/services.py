"""The hub's processes, started and stopped by ``radflow hub up|down``:

- ``prefect-server``: the hub's own Prefect server (API + UI, loopback only, basic auth on).
  Coordinator flows run here and coordinators watch them; no site ever gets its credential.
- ``worker``: a Prefect process worker on the hub's work pool ``hub``.
- ``federation-api``: the API the sites' agents call (enrolment, tokens, jobs, versions).
- ``idp``: the embedded OpenID provider (canaille, loopback) coordinators log in with, unless
  ``hub.json`` names another issuer (``oidc.issuer``).
- ``web``: the coordinators' web app (:mod:`radflow.hub.web`): studies, sites, flows.

`radflow hub up` also resumes the studies whose coordinator run died with the hub's processes
(:mod:`radflow.hub.recovery`), before it starts the worker.

Each published flow version becomes the hub deployment ``federated-study/<flow name>`` with the
version's short hash as its Prefect ``version`` (the history itself is in the hub database).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from urllib3.exceptions import InsecureRequestWarning

from radflow.errors import RadflowError, SiteError
from radflow.hub.home import WORK_POOL, HubHome
from radflow.hub.recovery import resume_quietly
from radflow.site.process import ManagedProcess

COORDINATOR_FLOW = "radflow.hub.flows.federated_study"
# hub.json's ports and the `radflow hub up` options that set them
PORT_OPTIONS = {"port": "--port", "prefect_port": "--prefect-port", "web_port": "--web-port",
                "idp_port": "--idp-port"}
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class HubServices:
    def __init__(self, home: HubHome) -> None:
        self.home = home

    def canaille(self):
        """The embedded provider, or None when ``hub.json`` names an external issuer."""
        from radflow.hub.home import HUB_USERS
        from radflow.web.idp import Canaille

        home = self.home
        if home.oidc().get("issuer"):
            return None
        secrets = home.secrets()
        users = {user: (secrets["users"][user], roles) for user, roles in HUB_USERS.items()}
        return Canaille(home.root / "idp", home.config()["idp_port"], "radflow hub",
                        secrets["idp_secret_key"], home.oidc()["client_id"],
                        secrets["oidc_client_secret"], home.web_url(), users, self.base_env())

    def process(self, name: str) -> ManagedProcess:
        log = {"federation-api": "api.log"}.get(name, f"{name}.log")
        return ManagedProcess(name, self.home.root / "run", self.home.root / "logs" / log)

    def base_env(self) -> dict[str, str]:
        """The caller's environment minus its Prefect settings, plus the hub's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"RADFLOW_HOME": str(self.home.root.parent),
                    "PREFECT_HOME": str(self.home.prefect_home),
                    "PREFECT_LOCAL_STORAGE_PATH": str(self.home.prefect_home / "results"),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_LOGGING_COLORS": "false"})
        return env

    def client_env(self) -> dict[str, str]:
        from radflow.prefect_api import PREFECT_CLIENT_RETRIES

        return {"PREFECT_API_URL": self.home.prefect_api_url,
                "PREFECT_API_AUTH_STRING": self.home.prefect_auth_string(), **PREFECT_CLIENT_RETRIES}

    # health probes -------------------------------------------------------------------------
    def api_healthy(self) -> bool:
        """The federation API answers on loopback (a liveness probe: no credential is sent, so
        the certificate, made out to the public name, is not checked here)."""
        config = self.home.config()
        scheme = "https" if config.get("tls") else "http"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            try:
                return requests.get(f"{scheme}://127.0.0.1:{config['port']}/healthz",
                                    timeout=2, verify=False).ok
            except (requests.RequestException, KeyError):
                return False

    def prefect_healthy(self) -> bool:
        try:
            self.home.prefect(timeout=3).version()
            return True
        except (RadflowError, FileNotFoundError, KeyError):
            return False

    def worker_healthy(self) -> bool:
        try:
            me = self.home.prefect(timeout=3).workers(WORK_POOL).get("hub-worker")
        except (RadflowError, FileNotFoundError, KeyError):
            return False
        return me is not None and me.status == "ONLINE"

    def idp_healthy(self) -> bool:
        idp = self.canaille()
        return idp is None or idp.probe()[0]

    def web_healthy(self) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            try:
                port = self.home.config()["web_port"]
                scheme = "https" if self.home.config().get("tls") else "http"
                return requests.get(f"{scheme}://127.0.0.1:{port}/healthz", timeout=2,
                                    verify=False).ok
            except (requests.RequestException, KeyError):
                return False

    def status(self) -> dict[str, str]:
        probes = {"prefect-server": self.prefect_healthy, "worker": self.worker_healthy,
                  "federation-api": self.api_healthy, "web": self.web_healthy}
        if self.home.config() and self.canaille() is not None:
            probes["idp"] = self.idp_healthy
        return {name: ("running" if self.process(name).process() is not None and probe()
                       else "starting" if self.process(name).process() is not None
                       else "stopped") for name, probe in probes.items()}

    # lifecycle -----------------------------------------------------------------------------
    def up(self, bind: str, certfile: Path | None, keyfile: Path | None,
           say: Say = _quiet) -> None:
        """Start what is not running and wait until each answers (idempotent)."""
        home = self.home
        config = home.config()
        server = self.process("prefect-server")
        if server.process() is None:
            self._port_free("prefect-server", "prefect_port")
            env = self.base_env()
            env.update({
                "PREFECT_API_DATABASE_CONNECTION_URL": home.prefect_database_url(),
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(config["prefect_port"]),
                "PREFECT_SERVER_API_AUTH_STRING": home.prefect_auth_string(),
                # a scheduled study's runs are made within 10 s of its schedule's change
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
                "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": home.prefect_api_url})
            home.prefect_home.mkdir(parents=True, exist_ok=True)
            if not home.secrets().get("prefect_database_url"):  # SQLite: from the template
                from radflow.prefect_db import seed

                seed(home.prefect_home / "prefect.db")
            server.start([sys.executable, "-m", "radflow.hub.prefect_server", "server", "start", "--host",
                          "127.0.0.1", "--port", str(config["prefect_port"])], env, cwd=home.root)
        api = self.process("federation-api")
        if api.process() is None:
            self._port_free("federation-api", "port")
            argv = [sys.executable, "-m", "radflow.hub", "--home", str(home.root.parent),
                    "--bind", bind]
            if certfile and keyfile:
                argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
            api.start(argv, self.base_env(), cwd=home.root)
        idp = self.canaille()  # needs neither: it starts (and is seeded) while the others do
        if idp is not None:
            idp.prepare()
            if self.process("idp").process() is None:
                self._port_free("idp", "idp_port")
                self.process("idp").start(*idp.command(), cwd=home.root)
        self._wait("federation-api", self.api_healthy, 30)
        say(f"federation-api: {home.url()}")
        self._wait("prefect-server", self.prefect_healthy, 90)
        say(f"prefect-server: {home.prefect_url}")
        home.prefect().ensure_work_pool(WORK_POOL)
        from radflow.prefect_api import outside_event_loop

        deployed = outside_event_loop(apply_hub_deployments, home)
        say(f"deployments: {', '.join(deployed) or 'none yet (radflow publish)'}")
        worker = self.process("worker")
        # the studies whose coordinator died with the hub go on (before the worker takes runs)
        for line in resume_quietly(home, worker_running=worker.process() is not None):
            say(line)
        if worker.process() is None:
            env = {**self.base_env(), **self.client_env(), "PREFECT_WORKER_QUERY_SECONDS": "1"}
            worker.start([sys.executable, "-m", "radflow.forkserver", "--socket",
                          str(warm_socket(home)), "--preload", COORDINATOR_FLOW.rpartition(".")[0],
                          "--", sys.executable, "-m", "prefect", "worker", "start", "--pool",
                          WORK_POOL, "--type", "process", "--name", "hub-worker"], env,
                         cwd=home.root)
        if idp is not None:  # the web app reads the provider's discovery document at start
            self._wait("idp", self.idp_healthy, 60)
            say(f"idp: {idp.issuer} (radflow hub credentials)")
        web = self.process("web")
        if web.process() is None:
            self._port_free("web", "web_port")
            argv = [sys.executable, "-m", "radflow.hub.web", "--home", str(home.root.parent),
                    "--bind", bind]
            if certfile and keyfile:
                argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
            web.start(argv, {**self.base_env(), **self.client_env()}, cwd=home.root)
        self._wait("worker", self.worker_healthy, 60)  # it and the web app start side by side
        say(f"worker: online in pool {WORK_POOL}")
        self._wait("web", self.web_healthy, 30)
        say(f"web: {home.web_url()}/studies")

    def _port_free(self, name: str, key: str) -> None:
        """Refuse to start ``name`` on a port something else holds (its probe would answer for
        that other process, another hub's perhaps)."""
        from radflow.site.config import port_is_free

        port = self.home.config()[key]
        if not port_is_free(port):
            raise SiteError(f"port {port} for the hub's {name} is already in use",
                            fix=f"stop whatever listens on {port}, or choose another port "
                                f"with `radflow hub up {PORT_OPTIONS[key]} N`")

    def _wait(self, name: str, probe: Callable[[], bool], timeout: float) -> None:
        proc = self.process(name)
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline or proc.process() is None:
                raise SiteError(f"the hub's {name} did not start: {proc.log_tail(5)}",
                                fix=f"read {proc.log_path}")
            time.sleep(0.25)

    def down(self) -> list[str]:
        """Stop the web app, its provider and the worker, then the federation API and the
        Prefect server (each group side by side); returns what ran."""
        stopped = []
        for wave in (("web", "idp", "worker"), ("federation-api", "prefect-server")):
            with ThreadPoolExecutor(len(wave)) as pool:
                ran = list(pool.map(lambda name: self.process(name).stop(), wave))
            stopped += [name for name, was in zip(wave, ran, strict=True) if was]
        return stopped


def hub_prefect(home: HubHome):
    """Point Prefect clients in this process at the hub's Prefect server."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_RETRY_EXTRA_CODES,
        temporary_settings,
    )

    return temporary_settings(updates={PREFECT_API_URL: home.prefect_api_url,
                                       PREFECT_API_AUTH_STRING: home.prefect_auth_string(),
                                       PREFECT_CLIENT_RETRY_EXTRA_CODES: {500}})


def warm_socket(home: HubHome) -> Path:
    """Where the hub worker's fork server listens (:mod:`radflow.forkserver`), in the folder of
    the hub's PID files."""
    from radflow.forkserver import SOCKET_NAME

    return home.root / "run" / SOCKET_NAME


def apply_hub_deployments(home: HubHome) -> list[str]:
    """One deployment ``federated-study/<name>`` per published flow, at its newest version
    (Prefect's ``version``: the short hash). Idempotent."""
    from prefect.types.entrypoint import EntrypointType
    from prefect.utilities.importtools import import_object

    from radflow.hub import registry

    newest: dict[str, str] = {}
    for version in registry.versions(home.engine()):  # oldest first
        newest[version.name] = version.hash
    if not newest:
        return []
    from radflow.forkserver import warm_command
    from radflow.hub.schedules import existing, keep_schedules

    flow = import_object(COORDINATOR_FLOW)
    names = []
    scheduled = existing(home)  # (applying a deployment again may drop its schedules)
    with hub_prefect(home):
        for name, version_hash in sorted(newest.items()):
            deployment = flow.to_deployment(
                name=name, version=version_hash[7:19], entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name=WORK_POOL, parameters={"name": name},
                description=f"The coordinator part of {name} (version {version_hash}).",
                tags=["radflow", "federation", f"version:{version_hash[7:19]}"],
                job_variables={"command": warm_command(warm_socket(home))})
            deployment.apply(work_pool_name=WORK_POOL)
            names.append(f"federated-study/{name}")
    keep_schedules(home, scheduled)
    return names
