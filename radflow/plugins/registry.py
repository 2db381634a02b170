"""Discover plugins through the ``radflow.plugins`` entry point group.

Each entry point is loaded in its own try/except: a broken plugin is reported (by
`radflow plugins list`, with its error), never allowed to break radflow. Results are cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points

from radflow.errors import PluginNotFound
from radflow.plugins.spec import Plugin

GROUP = "radflow.plugins"
logger = logging.getLogger(__name__)
KNOWN_DISTRIBUTIONS = {"nnunet": "radflow-nnunet", "radiomics": "radflow-radiomics"}


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
        except Exception as exc:
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
                                     fix=f"reinstall it (`pip install --force-reinstall {status.distribution}`)")
            return status.plugin
    dist = KNOWN_DISTRIBUTIONS.get(name, f"radflow-{name}")
    raise PluginNotFound(f"no radflow plugin named {name!r} is installed",
                         fix=f"ensure that `{dist}` is installed (`pip install {dist}`)")
