"""One typed registry for every pluggable kind: methods, benchmarks, attacks, judges, trait judges, backends.

A registry *finds* its plugins: on first lookup it imports every public module of its package
(:func:`plugin_modules`), and each module registers its plugins with :meth:`Registry.register`.
Helpers never live beside plugins under a public name: they go in a ``support/`` subpackage or a
module whose name starts with ``_``, so a listing of the package is the list of plugins and a new
plugin is one new file, with no list to keep.  Lookups of unknown names raise an
:class:`~lpa.errors.LpaError` that lists the valid choices; nothing is imported until a name is
looked up, so ``--help`` never imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from lpa.errors import LpaError, unknown_choice

T = TypeVar("T")

# Module names inside a plugin package that are never plugins: the contract (base) and helpers (support).
NOT_PLUGINS = frozenset({"base", "support"})


def plugin_modules(package: str) -> list[str]:
    """Dotted names of the plugin modules of ``package``: every public module but ``base`` and ``support``.

    A plain module (no ``__path__``) is its own single plugin module.
    """
    module = importlib.import_module(package)
    path = getattr(module, "__path__", None)
    if path is None:
        return [package]
    return sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules(path)
                  if not info.name.startswith("_") and info.name not in NOT_PLUGINS)


class Registry(Generic[T]):
    """Name -> plugin mapping with loud failures on duplicates and unknown names.

    ``package`` is the dotted path of the package (or single module) whose plugin modules are
    imported on first lookup; ``modules`` adds modules outside it (rarely needed).  Registering
    the same name twice with a different object is an error.
    """

    def __init__(self, kind: str, package: str | None = None, modules: list[str] | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._modules = list(modules or [])
        self._loaded = False

    def modules(self) -> list[str]:
        """Every module this registry imports to find its plugins."""
        found = plugin_modules(self.package) if self.package else []
        return [*found, *(m for m in self._modules if m not in found)]

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.modules():
            importlib.import_module(module)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name: str, item: T | None = None) -> T | Callable[[T], T]:
        """Register ``item`` under ``name``; usable as ``@REGISTRY.register("name")``."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"Invalid {self.kind} name {name!r}: use letters, digits, '-', '_' or '.'.")

        def _do(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered.")
            self._items[name] = obj
            return obj

        return _do(item) if item is not None else _do

    def add(self, item: T) -> T:
        """Register ``item`` under its own ``name`` attribute: the class decorator of a plugin kind."""
        name = getattr(item, "name", None)
        if not isinstance(name, str):
            raise ValueError(f"A {self.kind} needs a 'name' to be registered: {item!r}.")
        self.register(name, item)
        return item

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise unknown_choice(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def parse_names(value: str | list[str] | None, registry: Registry[T]) -> list[str]:
    """Split a comma list (CLI) or list (YAML) of names and validate each against ``registry``."""
    if value is None:
        return []
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    for name in names:
        if name not in registry:
            raise unknown_choice(registry.kind, name, registry.names())
    if not names:
        raise LpaError(f"No {registry.kind} given. Valid choices: {', '.join(registry.names())}.")
    return names
