"""The plugin mechanism: entry point group ``radflow.plugins``, typed task declarations."""

from radflow.plugins.registry import discover, get_plugin, plugins
from radflow.plugins.spec import Plugin, Resources, TaskSpec, distribution_version

__all__ = ["Plugin", "Resources", "TaskSpec", "discover", "distribution_version", "get_plugin",
           "plugins"]
