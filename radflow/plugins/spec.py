"""What a plugin declares: its tasks with typed inputs and outputs, resources, blocks, image.

A plugin is a pip-installable distribution exposing an object of type :class:`Plugin` under the
entry point group ``radflow.plugins``::

    [project.entry-points."radflow.plugins"]
    hello = "radflow_hello.plugin:plugin"

Importing the module that defines it must stay light and free of side effects: heavy libraries
(torch, nnunetv2, SimpleITK, radiomics) are imported inside the task functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radflow.errors import PluginNotFound


@dataclass(frozen=True)
class Resources:
    """What one run of a task needs.

    Attributes:
        cpus: CPU cores it keeps busy.
        memory_gb: peak memory.
        gpu: ``none``, ``optional`` (faster with one) or ``required``.
    """

    cpus: float = 1.0
    memory_gb: float = 1.0
    gpu: str = "none"

    def __post_init__(self) -> None:
        if self.gpu not in ("none", "optional", "required"):
            raise ValueError(f"gpu must be none, optional or required, got {self.gpu!r}")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a plugin.

    Attributes:
        name: the task's name within the plugin, e.g. ``segment``.
        task: the Prefect task (a ``@task``-decorated function).
        inputs: parameter name -> type (radflow types such as ``SeriesRef``, or builtins).
        output: the type it returns.
        description: one line for `radflow plugins list`.
        resources: what one run needs.
    """

    name: str
    task: Any
    inputs: dict[str, Any]
    output: Any
    description: str
    resources: Resources = field(default_factory=Resources)

    def signature(self) -> str:
        args = ", ".join(f"{k}: {_type_name(v)}" for k, v in self.inputs.items())
        return f"{self.name}({args}) -> {_type_name(self.output)}"


@dataclass(frozen=True)
class Plugin:
    """A radflow plugin.

    Attributes:
        name: short name, e.g. ``nnunet``.
        version: the plugin's version (usually its distribution's).
        description: one line.
        tasks: the tasks it contributes.
        blocks: Prefect block classes it contributes (registered on every site).
        image: container image with the plugin installed, for docker work pools.
        setup_site: optional hook ``(site_context) -> None`` run by `radflow site up` after the
            blocks are registered (e.g. to save default block documents).
    """

    name: str
    version: str
    description: str
    tasks: tuple[TaskSpec, ...] = ()
    blocks: tuple[type, ...] = ()
    image: str | None = None
    setup_site: Any = None

    def task(self, name: str) -> TaskSpec:
        """A task by name.

        Raises:
            PluginNotFound: the plugin has no such task (the message lists those it has).
        """
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise PluginNotFound(
            f"plugin {self.name!r} has no task {name!r} (it has: "
            f"{', '.join(t.name for t in self.tasks) or 'none'})",
            fix=f"see `radflow plugins list` for the tasks of {self.name!r}",
        )


def distribution_version(distribution: str) -> str:
    """The installed version of a plugin's distribution ("0.0.0" when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0.0.0"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
