"""systemd units for running a site or the hub as a service (production).

A site is one unit, ``radflow-site-NAME.service``: ``ExecStart`` is `radflow site up`, which
starts every component and returns once all are healthy (``Type=forking``); systemd then
follows the site's supervisor (its PID file), which restarts any component that dies. If the
supervisor itself dies, systemd stops the whole site (`radflow site down`) and starts it again
(``Restart=on-failure``). ``systemctl stop`` runs `radflow site down`, which stops each
component cleanly (workers first, Orthanc last).

The hub is one unit, ``radflow-hub.service`` (``Type=oneshot`` with ``RemainAfterExit``: `radflow
hub up` and `radflow hub down`).

No secret goes into a unit: the components read them from the site's folder (mode 0600), as
they do when started by hand. The units carry the environment radflow needs (RADFLOW_HOME,
TCP_NODELAY), resource limits for the whole site (``MemoryMax``, ``CPUQuota``, ``TasksMax``,
``LimitNOFILE``) and sandboxing (``ProtectSystem``, ``PrivateTmp``, ``NoNewPrivileges``; only
RADFLOW_HOME is writable).

    radflow site install-service --site NAME --user radflow --memory-max 24G
"""

from __future__ import annotations

import getpass
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from radflow.errors import ConfigurationError

_SIZE = re.compile(r"^\d+(\.\d+)?[KMGT]?$|^infinity$")
_PERCENT = re.compile(r"^\d+%$")


@dataclass(frozen=True)
class Limits:
    """Resource limits for a whole site (systemd's names and syntax).

    Attributes:
        memory_max: ``MemoryMax`` (e.g. ``24G``); the kernel stops the site's processes beyond.
        cpu_quota: ``CPUQuota`` (e.g. ``150%``: one and a half cores).
        tasks_max: ``TasksMax``: processes and threads.
        nofile: ``LimitNOFILE``: open files per process (Orthanc and Prefect keep many).
    """

    memory_max: str | None = None
    cpu_quota: str | None = None
    tasks_max: int = 4096
    nofile: int = 65536

    def __post_init__(self) -> None:
        if self.memory_max is not None and not _SIZE.match(self.memory_max):
            raise ConfigurationError(f"memory limit {self.memory_max!r} is not a size",
                                     fix="use bytes with K, M, G or T, e.g. 24G")
        if self.cpu_quota is not None and not _PERCENT.match(self.cpu_quota):
            raise ConfigurationError(f"CPU quota {self.cpu_quota!r} is not a percentage",
                                     fix="100% per core, e.g. 150% for one and a half cores")


def quote(arg: str) -> str:
    """One ExecStart argument: systemd splits on spaces, expands ``$`` and ``%``."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', arg) or not arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def command_line(argv: list[str]) -> str:
    return " ".join(quote(a) for a in argv)


def _radflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "radflow", *args]


def _common(home: Path, user: str, limits: Limits, workdir: Path) -> list[str]:
    lines = [
        f"User={user}",
        f"WorkingDirectory={workdir}",
        f"Environment={quote('RADFLOW_HOME=' + str(home))}",
        "Environment=TCP_NODELAY=1",
        "Environment=PYTHONUNBUFFERED=1",
        f"LimitNOFILE={limits.nofile}",
        f"TasksMax={limits.tasks_max}",
    ]
    if limits.memory_max:
        lines.append(f"MemoryMax={limits.memory_max}")
    if limits.cpu_quota:
        lines.append(f"CPUQuota={limits.cpu_quota}")
    lines += ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=full",
              "ProtectHome=read-only", f"ReadWritePaths={quote(str(home))}"]
    return lines


def site_unit(ctx: object, *, user: str | None = None, limits: Limits | None = None) -> str:
    """The unit file of one site."""
    name = ctx.config.name  # type: ignore[attr-defined]
    paths = ctx.paths  # type: ignore[attr-defined]
    home = ctx.settings.home  # type: ignore[attr-defined]
    limits = limits or Limits()
    body = [
        "[Unit]",
        f"Description=radflow site {name} (Orthanc, Prefect server and worker, watcher, "
        "web app)",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=900",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=forking",
        f"PIDFile={paths.run / 'supervisor.main.pid'}",
        f"ExecStart={command_line(_radflow('site', 'up', '--site', name))}",
        f"ExecStop={command_line(_radflow('site', 'down', '--site', name))}",
        "Restart=on-failure",
        "RestartSec=10s",
        "TimeoutStartSec=600",
        "TimeoutStopSec=180",
        *_common(home, user or getpass.getuser(), limits, paths.root),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(body) + "\n"


def hub_unit(home_dir: Path, radflow_home: Path, *, user: str | None = None,
             limits: Limits | None = None) -> str:
    """The unit file of the hub (its folder ``home_dir`` under RADFLOW_HOME)."""
    limits = limits or Limits()
    body = [
        "[Unit]",
        "Description=radflow hub (federation API, Prefect server and worker, coordinators' "
        "web app)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={command_line(_radflow('hub', 'up'))}",
        f"ExecStop={command_line(_radflow('hub', 'down'))}",
        "TimeoutStartSec=600",
        "TimeoutStopSec=180",
        *_common(radflow_home, user or getpass.getuser(), limits, home_dir),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(body) + "\n"
