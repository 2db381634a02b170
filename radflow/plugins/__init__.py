"""The plugin mechanism: entry point group ``radflow.plugins``; task declarations read from the
tasks' annotations; tasks found by what they do."""

from radflow.plugins.registry import (
    deployment_name,
    discover,
    find_step,
    find_task,
    get_plugin,
    plugins,
    site_deployments,
)
from radflow.plugins.spec import DeploymentSpec, Plugin, Resources, TaskSpec, distribution_version

__all__ = ["DeploymentSpec", "Plugin", "Resources", "TaskSpec", "deployment_name", "discover",
           "distribution_version", "find_step", "find_task", "get_plugin", "plugins", "site_deployments"]
