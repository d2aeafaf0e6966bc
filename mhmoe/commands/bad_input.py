"""Bad input on the command line: one line on stderr naming the field or file, exit 2, no traceback.

Every ``mhmoe`` subcommand wraps its ``main`` in :func:`refuses_bad_input` and builds its flags with
:class:`Parser`, so a wrong flag, config value, spec, data file, checkpoint or storage URL reads
the same everywhere. Commands check their input before opening any store, so a refusal leaves
nothing behind.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable

from mhmoe.config.base import ConfigError

EXIT_BAD_INPUT = 2
DASHED_KEY = re.compile(r"--([a-z_]+\.[a-z_.]+)(?:=(\S*))?")
"""``--moe.heads=2``: a dotted config key written as a flag."""

# Each command imports only what it needs (``mhmoe budget`` must not import torch): an error class
# can only have been raised if its module is loaded, so look them up there instead of importing.
_ERROR_CLASSES = (
    ("mhmoe.config.data", "DataError"),
    ("mhmoe.training.checkpoint", "CheckpointError"),
    ("mhmoe.store.urls", "StoreError"),
)


def user_error_types() -> tuple[type[Exception], ...]:
    """ConfigError (SpecError included), DataError, CheckpointError and StoreError (storage/tracking URLs)."""
    found: list[type[Exception]] = [ConfigError]
    for module_name, class_name in _ERROR_CLASSES:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            found.append(getattr(module, class_name))
    return tuple(found)


def refuse(prefix: str, err: Exception) -> int:
    """Print ``err`` as ``<prefix>: <line>`` (one line per problem a SpecError lists); return 2."""
    lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    for line in lines:
        print(f"{prefix}: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def refuses_bad_input(prefix: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main(argv) -> int``: user errors become :func:`refuse`, argparse exits a code."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return int(main(argv) or 0)
            except SystemExit as exit_:  # --help and Parser.error: return the code (in-process callers)
                return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception as err:
                if isinstance(err, user_error_types()):
                    return refuse(prefix, err)
                raise

        return run

    return decorate


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        dashed = DASHED_KEY.search(message)
        hint = (f"; config keys take no dashes: write {dashed.group(1)}={dashed.group(2) or 'VALUE'}" if dashed
                else f" (see {self.prog} --help)")
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}{hint}\n")


__all__ = ["EXIT_BAD_INPUT", "Parser", "refuse", "refuses_bad_input", "user_error_types"]
