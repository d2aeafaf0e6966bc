"""Objects named by import path (``package.module:attribute``): how the variant and router
registries name torch code without importing it, and how rank processes find a caller's hooks."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any


@cache
def resolve(path: str) -> Any:
    """``package.module:attribute`` -> the attribute (imported once)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
