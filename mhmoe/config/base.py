"""Shared machinery for the frozen config dataclasses: errors, field checks, dotted overrides.

Every component config is a ``@dataclass(frozen=True, kw_only=True)`` that validates itself in
``__post_init__`` and raises :class:`ConfigError` naming the dotted field and the allowed values.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, cast, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is wrong; the message names the dotted field and what is allowed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    # inf passes a plain `> 0` (an infinite learning rate trained a whole run on NaN): require finite.
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number {bound}")
    if not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(f"{name}={value!r} must be {bound}")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ConfigError."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        allowed = list(get_args(annotation))
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}={value!r} has the wrong type")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list")
        args = get_args(annotation)
        inner = args[0] if args else Any
        return tuple(_coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}={value!r} must be a bool (true/false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}={value!r} must be an integer")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}={value!r} must be a number")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}={value!r} must be a string")
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return from_dict(annotation, value, prefix=name)
        raise ConfigError(f"{name} must be a mapping of {annotation.__name__} fields")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unknown_key(key: str, allowed: Iterable[str], *, what: str = "config key") -> str:
    """``unknown config key 'moe.head'; did you mean 'moe.heads'? (moe.* keys: [...])``: the closest
    matches and the keys of the same section, not every key (``mhmoe config`` lists them all)."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = [k for k in allowed if section and k.startswith(section)]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    scope = (f" ({section}* keys: {siblings})" if siblings and len(siblings) <= 30 else
             f" (sections: {sorted({k.split('.')[0] for k in allowed})}; `mhmoe config` lists every key)")
    return f"unknown {what} {key!r}{hint}{scope}"


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build a (nested) config dataclass from plain data, naming unknown keys."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cast(Any, cls)) if f.init]  # T: a config dataclass
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(unknown_key(full, [f"{prefix}.{n}" if prefix else n for n in names]))
        kwargs[key] = _coerce(full, value, hints[key])
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for YAML/JSON and checkpoints."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        return value

    return convert(config)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted ``{"moe.heads": 3, ...}`` view of a nested config, for MLflow params."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, type, str]]:
    """(dotted key, declared type, owning class, field name) of every leaf field, in declaration order."""
    hints = _field_types(cls)
    out: list[tuple[str, Any, type, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        annotation = hints[f.name]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            out.extend(leaf_fields(annotation, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", annotation, cls, f.name))
    return out


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key a config class accepts."""
    return [key for key, *_ in leaf_fields(cls, prefix)]


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a config class: the string literal right after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def key_docs(cls: type) -> list[tuple[str, Any, str]]:
    """(dotted key, declared type, docstring) for every key of a config class, in declaration order."""
    docs = {owner: field_docs(owner) for _, _, owner, _ in leaf_fields(cls)}
    return [(key, annotation, docs[owner].get(name, "")) for key, annotation, owner, name in leaf_fields(cls)]


def apply_overrides(cls: type[T], base: Mapping[str, Any], overrides: Mapping[str, Any]) -> T:
    """Merge dotted overrides over a nested dict and build ``cls``; unknown keys fail listing valid ones."""
    allowed = set(valid_keys(cls))
    merged = to_dict(base) if dataclasses.is_dataclass(base) else _deepcopy(base)
    for key, value in overrides.items():
        if key not in allowed:
            raise ConfigError(unknown_key(key, allowed))
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(cls, merged)


def _deepcopy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def dotted_from_nested(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{moe: {heads: 2}}`` and ``{moe.heads: 2}`` both become ``{"moe.heads": 2}`` (the inverse of
    :func:`nested_from_dotted`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(dotted_from_nested(value, full + "."))
        else:
            out[full] = value
    return out


def nested_from_dotted(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
