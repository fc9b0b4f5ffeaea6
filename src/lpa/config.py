"""YAML configs validated by pydantic, with ``key.sub=value`` overrides from the command line.

Every command builds its config the same way: defaults <- YAML file <- CLI overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lpa.errors import LpaError
from lpa.io import read_text

C = TypeVar("C", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Config file not found: {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        raise LpaError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict):
        raise LpaError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=value`` strings; values are parsed as YAML scalars (numbers, bools, lists)."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise LpaError(f"Override {item!r} must look like key=value (e.g. train.steps=20).")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def merge_nested(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> C:
    """defaults <- YAML file <- overrides, validated by ``cls``; errors name the bad field."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = merge_nested(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    return validate_config(cls, data, source=str(path) if path else "config")


def validate_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise LpaError(f"Invalid {source}: {problems}") from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
