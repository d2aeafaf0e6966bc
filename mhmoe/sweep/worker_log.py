"""A sweep worker's log lines: to its stdout (the terminal, or its log file under ``--log-dir``), and with
``--log-dir`` also the first line of each to the supervisor's console, so a run with log files still shows
its progress as it goes (one line per validation, trial start and end, the overall status)."""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

CONSOLE_FD_ENV = "MHMOE_CONSOLE_FD"
"""A file descriptor of the supervisor's console, set by :mod:`mhmoe.sweep.launch` for a worker whose
output goes to a log file."""

_console: TextIO | None = None


def take_console() -> None:
    """Open the console named by :data:`CONSOLE_FD_ENV` (once, at worker start) and unset the variable:
    processes the worker starts (data-parallel ranks) do not hold that descriptor."""
    global _console
    fd = os.environ.pop(CONSOLE_FD_ENV, None)
    if fd is None:
        return
    try:
        _console = os.fdopen(int(fd), "w", buffering=1)
    except (OSError, ValueError):
        _console = None


def log(message: str, worker: str) -> None:
    line = f"[sweep worker {worker}] {message}"
    print(line, flush=True)
    if _console is not None:
        first, _, rest = line.partition("\n")
        # OSError: the console went away (a closed terminal); the log file still has everything.
        with contextlib.suppress(OSError):
            _console.write(first + (" (more in the worker's log)" if rest else "") + "\n")


__all__ = ["CONSOLE_FD_ENV", "log", "take_console"]
