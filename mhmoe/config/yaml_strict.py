"""Strict YAML reading for config files, sweep specs and CLI values: duplicate keys are errors.

PyYAML keeps the last of two equal keys, so a spec listing a group twice silently trained only
the second one. :class:`StrictLoader` refuses that; :func:`read_yaml_file` also turns syntax
errors and non-UTF-8 bytes into one :class:`~mhmoe.config.base.ConfigError` line naming the file,
line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mhmoe.config.base import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises on a key written twice in one mapping (``<<`` merges may override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first written at line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def parse_yaml(text: str, what: str) -> Any:
    """``text`` as YAML; ConfigError ``"<what>: not valid YAML at line L, column C: <problem>"``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what}: not valid YAML at {_where(err)}{problem}") from None


def parse_value(text: str) -> Any:
    """CLI ``key=value`` text to a Python value using YAML scalars (``true``, ``3``, ``1.58``)."""
    return parse_yaml(text, f"value {text!r}") if text != "" else ""


def read_yaml_file(path: Path, what: str) -> Any:
    """A UTF-8 YAML file; every failure is one ConfigError line that starts with ``what`` and the path."""
    label = f"{what} {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{label} cannot be read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{label} is not valid UTF-8 (byte offset {err.start}); save it as UTF-8") from None
    return parse_yaml(text, label)


__all__ = ["StrictLoader", "parse_value", "parse_yaml", "read_yaml_file"]
