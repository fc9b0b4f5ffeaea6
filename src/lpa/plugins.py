"""The plugin contract: named classes generic over their pydantic arguments, and the one spec parser.

A plugin is a class with a ``name`` and an ``Args`` model; ``class Keyword(Judge[KeywordArgs])``
sets ``Args`` from the type parameter, so ``self.args`` is typed as ``KeywordArgs``.  Creating a
plugin validates its arguments (unknown or bad ones raise :class:`LpaError` naming the valid
ones), and :meth:`Plugin.spec` returns ``{"name": ..., "args": ...}`` so every result row says
exactly which plugin and settings produced it.  The CLI, YAML suites and Python all create
plugins through :func:`create`.

Spec strings (:func:`parse_spec`): ``name``, ``name:key=value,key=value``; a list of specs is
separated by ``,`` when no spec has arguments, else by ``;`` (:func:`split_specs`).  Values are
read as YAML scalars (``steps=5`` is an int, ``fast=true`` a bool).  **Quoting rule:** a value in
double or single quotes is one YAML-quoted string, and ``,``, ``;``, ``:`` and ``=`` inside
quotes are part of it, e.g. ``file:path="runs/a,b;c.jsonl",limit=3``.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lpa.errors import LpaError
from lpa.registry import Registry

PluginSpec = str | dict[str, Any]


class PluginArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


A = TypeVar("A", bound=PluginArgs)


class Plugin(Generic[A]):
    """Base of every plugin class; ``Plugin[MyArgs]`` types ``self.args`` and sets ``Args``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "plugin"
    Args: ClassVar[type[PluginArgs]] = PluginArgs
    args: A

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Args" in cls.__dict__:
            return
        for base in getattr(cls, "__orig_bases__", ()):
            params = [p for p in typing.get_args(base) if isinstance(p, type) and issubclass(p, PluginArgs)]
            if params:
                cls.Args = params[0]
                return

    def __init__(self, **args: Any) -> None:
        try:
            self.args = typing.cast(A, self.Args(**args))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            valid = ", ".join(self.Args.model_fields) or "(none)"
            raise LpaError(f"Bad arguments for {self.kind} {self.name!r}: {problems}. Valid arguments: {valid}.") from None

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args.model_dump(mode="json")}

    def check(self) -> None:
        """Cheap checks of what the plugin will read (its files), run before any model is loaded.

        Raise :class:`LpaError`; a run collects every plugin's problem into one message.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args!r})"


P = TypeVar("P", bound=Plugin[Any])


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` except inside '...' or "..." (backslash escapes inside double quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quote, escaped = "", False
    for char in text:
        if escaped:
            escaped = False
        elif quote == '"' and char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:
        raise LpaError(f"Unclosed {quote} quote in {text!r}.")
    parts.append("".join(current))
    return parts


def split_specs(value: str) -> list[str]:
    """A CLI list of specs: ``"keyword,trained"``, or ``"local-llm:model=x;keyword"`` once one has arguments."""
    separator = ";" if any(c in value for c in ":;") else ","
    return [v.strip() for v in split_outside_quotes(value, separator) if v.strip()]


def parse_spec(spec: PluginSpec) -> tuple[str, dict[str, Any]]:
    """``(name, args)`` of ``"name"``, ``"name:key=value,..."`` (see the quoting rule) or ``{"name", "args"}``."""
    if isinstance(spec, dict):
        if "name" not in spec:
            raise LpaError(f"Plugin spec {spec!r} has no 'name'.")
        return str(spec["name"]).strip(), dict(spec.get("args") or {})
    name, _, inline = spec.partition(":")
    args: dict[str, Any] = {}
    if inline.strip():
        for part in split_outside_quotes(inline, ","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise LpaError(f"Bad plugin argument {part!r} in {spec!r}: use name:key=value,key=value "
                               "(quote values holding , or ;: key=\"a,b\").")
            try:
                args[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise LpaError(f"Bad value {value!r} for {key.strip()!r} in {spec!r}: {exc}") from None
    return name.strip(), args


def spec_name(spec: PluginSpec) -> str:
    return parse_spec(spec)[0]


def spec_label(spec: PluginSpec) -> str:
    """A spec as one string (``parse_spec`` reads it back): values with separators or quotes are quoted."""
    if isinstance(spec, str):
        return spec
    name, args = parse_spec(spec)
    inline = ",".join(f"{k}={_inline_value(v)}" for k, v in args.items())
    return f"{name}:{inline}" if inline else name


def _inline_value(value: Any) -> str:
    text = str(value)
    if isinstance(value, str) and any(c in text for c in ",;:=\"'"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def create(registry: Registry[type[P]], name_or_spec: PluginSpec, **args: Any) -> P:
    """Create a plugin from a name (``"gcg"``), ``"name:key=value,key=value"``, or ``{"name":..., "args":...}``.

    Keyword ``args`` win over the spec's own arguments.
    """
    name, given = parse_spec(name_or_spec)
    return registry.get(name)(**{**given, **args})
