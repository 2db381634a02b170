"""Discover plugins through the ``radflow.plugins`` entry point group.

Each entry point is loaded in its own try/except: a broken plugin is reported (by
`radflow plugins list`, with its error), never allowed to break radflow. Results are cached.
radflow's own flows are contributed the same way (entry point ``core``), so a site's
deployments are whatever the installed plugins declare.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from radflow.errors import PluginNotFound, RadflowError
from radflow.plugins.spec import DeploymentSpec, Plugin, TaskSpec

GROUP = "radflow.plugins"
logger = logging.getLogger(__name__)
KNOWN_DISTRIBUTIONS = {"nnunet": "radflow-nnunet", "radiomics": "radflow-radiomics",
                       "core": "radflow"}


@dataclass(frozen=True)
class PluginStatus:
    """One entry point of the group: the plugin it gave, or why it could not be loaded."""

    name: str
    distribution: str
    version: str
    plugin: Plugin | None = None
    error: str | None = None


@lru_cache(maxsize=1)
def discover() -> tuple[PluginStatus, ...]:
    """Load every plugin once per process (``discover.cache_clear()`` to look again)."""
    found = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            obj = ep.load()
            plugin = obj() if callable(obj) and not isinstance(obj, Plugin) else obj
            if not isinstance(plugin, Plugin):
                raise TypeError(f"{ep.value} is a {type(plugin).__name__}, not a radflow Plugin")
            found.append(PluginStatus(ep.name, dist, version, plugin=plugin))
        except Exception as exc:  # noqa: BLE001 (a broken plugin is reported, never fatal)
            logger.warning("plugin %s (%s) could not be loaded: %s", ep.name, dist, exc)
            found.append(PluginStatus(ep.name, dist, version,
                                      error=f"{type(exc).__name__}: {exc}"))
    return tuple(found)


def plugins() -> list[Plugin]:
    """The plugins that loaded."""
    return [s.plugin for s in discover() if s.plugin is not None]


def get_plugin(name: str) -> Plugin:
    """A loaded plugin by name.

    Raises:
        PluginNotFound: not installed, or broken (the message says which, and the fix).
    """
    for status in discover():
        if status.name == name:
            if status.plugin is None:
                raise PluginNotFound(f"plugin {name!r} is installed but broken: {status.error}",
                                     fix=f"reinstall it (`pip install --force-reinstall "
                                         f"{status.distribution}`)")
            return status.plugin
    dist = KNOWN_DISTRIBUTIONS.get(name, f"radflow-{name}")
    raise PluginNotFound(f"no radflow plugin named {name!r} is installed",
                         fix=f"ensure that `{dist}` is installed (`pip install {dist}`)")


def find_task(name: str, inputs: tuple[Any, ...] = (), output: Any = None,
              prefer: str | None = None) -> TaskSpec:
    """A task by what it does: its declared name, the types it takes first and what it returns.

    Any installed plugin offering such a task can stand in for another. When several do, the
    plugin named by ``prefer`` wins if it offers one; otherwise the choice must be made.

    Raises:
        PluginNotFound: no plugin offers it (or not the preferred one, when several do).
    """
    offers = [(p.name, t) for p in plugins() for t in _tasks(p)
              if t.name == name and t.accepts(*inputs) and (output is None or t.returns(output))]
    what = f"task {name!r}" + (f" taking {', '.join(_n(t) for t in inputs)}" if inputs else "") \
        + (f" returning {_n(output)}" if output is not None else "")
    if not offers:
        raise PluginNotFound(f"no installed plugin offers a {what}",
                             fix="install a plugin that does (`radflow plugins list` shows what "
                                 "is installed)")
    if prefer is not None:
        chosen = [t for p, t in offers if p == prefer]
        if chosen:
            return chosen[0]
    if len(offers) == 1:
        return offers[0][1]
    raise PluginNotFound(
        f"{len(offers)} plugins offer a {what}: {', '.join(p for p, _ in offers)}",
        fix="choose one (the flow's plugin parameter, e.g. segmenter='nnunet')")


def _tasks(plugin: Plugin) -> tuple[TaskSpec, ...]:
    """A plugin's tasks; none (with a warning) when its named tasks cannot be imported: one
    broken plugin never hides the others' tasks."""
    try:
        return tuple(plugin.tasks)
    except RadflowError as exc:
        logger.warning("plugin %s: its tasks could not be loaded: %s", plugin.name, exc)
        return ()


def find_step(name: str, prefer: str | None = None) -> Any:
    """A flow-level step (e.g. ``review``) offered by an installed plugin.

    Raises:
        PluginNotFound: no plugin offers it, or several do and none is preferred.
    """
    offers = [(p.name, p.steps[name]) for p in plugins() if name in p.steps]
    chosen = [s for p, s in offers if p == prefer] if prefer else []
    if chosen:
        return chosen[0]
    if len(offers) == 1:
        return offers[0][1]
    if not offers:
        raise PluginNotFound(f"no installed plugin offers a {name!r} step",
                             fix=f"install one (`pip install radflow-{name}`)")
    raise PluginNotFound(f"{len(offers)} plugins offer a {name!r} step: "
                         f"{', '.join(p for p, _ in offers)}", fix="choose one by name")


def site_deployments() -> list[DeploymentSpec]:
    """Every deployment the installed plugins (core included) declare, core's first."""
    ordered = sorted(plugins(), key=lambda p: (p.name != "core", p.name))
    return [d for p in ordered for d in p.deployments]


def deployment_name(flow_name: str, site: str) -> str:
    """``<flow name>/<site>``, e.g. ``ingest/lab``."""
    return f"{flow_name}/{site}"


def _n(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
