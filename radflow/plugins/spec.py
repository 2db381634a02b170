"""What a plugin declares: its tasks, deployments, blocks, site components and image.

A plugin is a pip-installable distribution exposing an object of type :class:`Plugin` under the
entry point group ``radflow.plugins``::

    [project.entry-points."radflow.plugins"]
    hello = "radflow_hello.plugin:plugin"

A task's declaration (its inputs and output) is read from the task function's annotations, never
written by hand: what `radflow plugins list` shows is what the function takes and returns.
Importing the module that defines a plugin must stay light and free of side effects: heavy
libraries (torch, nnunetv2, SimpleITK, radiomics) are imported inside the task functions.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from radflow.errors import ConfigurationError, PluginNotFound
from radflow.plugins.declared import Declared, DeclaredMap, NamedHook

RUNTIME_PARAMETERS = ("site", "force")  # every radflow task takes these; not part of its type


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
            raise ConfigurationError(f"gpu must be none, optional or required, got {self.gpu!r}",
                                     fix="use Resources(gpu='optional') for a GPU-capable task")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a plugin, as read from the task function.

    Attributes:
        name: the task's name (the Prefect task's name, e.g. ``segment``).
        task: the Prefect task.
        inputs: parameter name -> type, from the function's annotations (without ``site`` and
            ``force``).
        output: the return annotation.
        description: one line for `radflow plugins list`.
        resources: what one run needs.
    """

    name: str
    task: Any
    inputs: dict[str, Any]
    output: Any
    description: str
    resources: Resources = field(default_factory=Resources)

    @classmethod
    def from_task(cls, task: Any, *, description: str | None = None,
                  resources: Resources | None = None) -> TaskSpec:
        """Read a task's declaration from its function's signature and annotations.

        Raises:
            ConfigurationError: a parameter or the return value is not annotated.
        """
        fn = getattr(task, "fn", task)
        hints = get_type_hints(fn)
        inputs = {}
        for name in inspect.signature(fn).parameters:
            if name in RUNTIME_PARAMETERS:
                continue
            if name not in hints:
                raise ConfigurationError(f"task {task.name!r}: parameter {name!r} has no type "
                                         "annotation", fix="annotate every parameter of a task")
            inputs[name] = hints[name]
        if "return" not in hints:
            raise ConfigurationError(f"task {task.name!r} has no return annotation",
                                     fix="annotate what the task returns")
        doc = (inspect.getdoc(fn) or "").split("\n")[0]
        return cls(name=task.name, task=task, inputs=inputs, output=hints["return"],
                   description=description or getattr(task, "radflow_description", None) or doc,
                   resources=resources or getattr(task, "radflow_resources", None) or Resources())

    def signature(self) -> str:
        args = ", ".join(f"{k}: {_type_name(v)}" for k, v in self.inputs.items())
        return f"{self.name}({args}) -> {_type_name(self.output)}"

    def accepts(self, *types: Any) -> bool:
        """Whether its first inputs take these types (in order)."""
        declared = list(self.inputs.values())
        return len(declared) >= len(types) and all(
            _is_sub(t, d) for t, d in zip(types, declared, strict=False))

    def returns(self, tp: Any) -> bool:
        return _is_sub(self.output, tp)


@dataclass(frozen=True)
class DeploymentSpec:
    """A flow deployed on every site (core's and plugins' alike).

    Attributes:
        flow: module path of the flow object, e.g. ``radflow.flows.ingest.ingest``.
        description: shown in the Prefect UI.
        parameters: default parameters (the site name is filled in at apply time).
        concurrency_limit: how many runs of it at once on the site.
        tags: Prefect tags.
    """

    flow: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ("radflow",)

    @property
    def flow_name(self) -> str:
        from prefect.utilities.importtools import import_object

        return import_object(self.flow).name


@dataclass(frozen=True)
class Plugin:
    """A radflow plugin.

    Attributes:
        name: short name, e.g. ``nnunet``.
        version: the plugin's version (usually its distribution's).
        description: one line.
        tasks: the Prefect tasks it contributes (their declarations are read from them).
        steps: flow-level steps by name: functions a flow calls directly (not tasks), e.g. the
            review step, which suspends the flow run.
        deployments: flows it deploys on every site.
        blocks: Prefect block classes it contributes (registered on every site).
        components: site components it adds to every site (long-running processes).
        web: pages it adds to the site's web app (:class:`radflow.web.WebPages`).
        image: container image with the plugin installed, for docker work pools.
        setup_site: optional hook ``(site_context) -> None`` run by `radflow site up` after the
            blocks are registered (e.g. to save default block documents).

    Tasks, steps, blocks, web pages (or a function making them) and ``setup_site`` may be
    named as ``"module:attribute"`` instead of imported: they are imported when first read,
    and importing the plugin stays light (:mod:`radflow.plugins.declared`).
    """

    name: str
    version: str
    description: str
    tasks: Sequence[Any] = ()
    steps: Mapping[str, Any] = field(default_factory=dict)
    deployments: tuple[DeploymentSpec, ...] = ()
    blocks: Sequence[Any] = ()
    components: tuple[Any, ...] = ()
    web: Sequence[Any] = ()
    image: str | None = None
    setup_site: Any = None

    def __post_init__(self) -> None:
        # tasks, blocks, steps, web pages and the hook may be named ("module:attribute") and
        # are then imported when first read: discovering plugins stays light (declared.py)
        object.__setattr__(self, "tasks", Declared(self.tasks, _task_spec, self.name, "task"))
        object.__setattr__(self, "blocks", Declared(self.blocks, _same, self.name, "block"))
        object.__setattr__(self, "web", Declared(self.web, _pages, self.name, "web pages"))
        object.__setattr__(self, "steps", DeclaredMap(self.steps, self.name, "step"))
        if isinstance(self.setup_site, str):
            object.__setattr__(self, "setup_site", NamedHook(self.setup_site, self.name,
                                                             "setup_site hook"))

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


def _task_spec(task: Any) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else TaskSpec.from_task(task)


def _same(value: Any) -> Any:
    return value


def _pages(value: Any) -> Any:
    """Web pages, or a function that makes them (a name may point at either)."""
    return value() if callable(value) else value


def distribution_version(distribution: str) -> str:
    """The installed version of a plugin's distribution ("0.0.0" when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0.0.0"


def _is_sub(tp: Any, base: Any) -> bool:
    try:
        return tp is base or (isinstance(tp, type) and isinstance(base, type)
                              and issubclass(tp, base))
    except TypeError:
        return False


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("radflow.types.", "")
