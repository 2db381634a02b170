"""A plugin's declarations, given as objects or named as ``"module:attribute"``.

Discovering plugins must stay light: every ``radflow`` command, the supervisor and the web app
discover them, most of them only for the plugins' site components. A plugin that names its tasks,
blocks, steps, web pages and ``setup_site`` hook instead of importing them (which imports Prefect,
and what its tasks import) is imported in milliseconds; the names are imported when a
declaration is first read (by a flow looking for a task, by `radflow site up` registering blocks,
by `radflow plugins list`)::

    plugin = Plugin(name="bone", version="0.1.0", description="...",
                    tasks=("radflow_bone.tasks:bone",), blocks=("radflow_bone.block:BoneParams",))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from radflow.errors import ConfigurationError, PluginNotFound


def resolve(ref: Any, plugin: str, what: str) -> Any:
    """``ref`` itself, or the object a ``"module:attribute"`` name names, imported now.

    Raises:
        ConfigurationError: the name is not of the form ``module:attribute``.
        PluginNotFound: the module or attribute cannot be imported (the plugin is broken).
    """
    if not isinstance(ref, str):
        return ref
    module, sep, attribute = ref.partition(":")
    if not (sep and module and attribute):
        raise ConfigurationError(f"plugin {plugin!r} declares the {what} {ref!r}, which is not "
                                 "a 'module:attribute' name",
                                 fix="name it as 'package.module:attribute', or pass the object")
    try:
        found: Any = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise PluginNotFound(f"plugin {plugin!r} declares the {what} {ref!r}, which cannot be "
                             f"imported: {type(exc).__name__}: {exc}",
                             fix=f"reinstall the plugin {plugin!r}, or fix its declaration") from exc
    return found


class Declared(Sequence[Any]):
    """A sequence of declarations (objects or names), each passed through ``convert`` once it is
    imported. Without names it is converted at once, so a bad object is refused where it is
    declared; with names, when it is first read. Its length never imports anything."""

    def __init__(self, refs: Iterable[Any], convert: Callable[[Any], Any], plugin: str,
                 what: str) -> None:
        self._refs = tuple(refs)
        self._convert, self._plugin, self._what = convert, plugin, what
        self._items: tuple[Any, ...] | None = None
        if not any(isinstance(r, str) for r in self._refs):
            self._load()

    def _load(self) -> tuple[Any, ...]:
        if self._items is None:
            self._items = tuple(self._convert(resolve(r, self._plugin, self._what))
                                for r in self._refs)
        return self._items

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())

    def __repr__(self) -> str:
        return repr(self._items if self._items is not None else self._refs)


class DeclaredMap(Mapping[str, Any]):
    """Declarations by name (a plugin's steps); a value named as ``"module:attribute"`` is
    imported when it is first read. Its keys never import anything."""

    def __init__(self, refs: Mapping[str, Any], plugin: str, what: str) -> None:
        self._refs = dict(refs)
        self._plugin, self._what = plugin, what
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._loaded:
            self._loaded[key] = resolve(self._refs[key], self._plugin, f"{self._what} {key!r}")
        return self._loaded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return repr(self._refs)


class NamedHook:
    """A hook named as ``"module:attribute"``: imported when it is first called."""

    def __init__(self, ref: str, plugin: str, what: str) -> None:
        self.ref, self._plugin, self._what = ref, plugin, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return resolve(self.ref, self._plugin, self._what)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"NamedHook({self.ref!r})"
