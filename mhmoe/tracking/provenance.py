"""Where a run came from: the command line and the git commit, recorded as tags so reports can quote them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from mhmoe.store.home import ENV_VAR

COMMAND_ENV = "MHMOE_COMMAND"
"""The user's command, handed to the processes it starts (data-parallel ranks), which would otherwise
record their own internal command line."""


def command_line(argv: list[str] | None = None) -> str:
    """``[MHMOE_HOME=...] mhmoe sweep run ...`` for the console script, else the raw argv; in a process
    started by mhmoe, the command that started it (:data:`COMMAND_ENV`)."""
    if argv is None and os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv = list(sys.argv if argv is None else argv)
    if argv and (Path(argv[0]).name == "mhmoe" or argv[0].endswith(os.path.join("mhmoe", "cli.py"))):
        argv = ["mhmoe", *argv[1:]]
    home = os.environ.get(ENV_VAR)
    return (f"{ENV_VAR}={shlex.quote(home)} " if home else "") + shlex.join(argv)


UNKNOWN_COMMIT = "unknown"
REPO = Path(__file__).resolve().parents[2]
REPORTS_DIR = "reports"  # where `mhmoe report` writes by default; its output is not the report's code


def git_commit(*, describe: bool = False) -> str:
    """HEAD of the checkout this code runs from, ``unknown`` outside one.

    ``describe`` (for reports) flags uncommitted changes to tracked files outside ``reports/``
    (a report rewrites its own folder before it writes the index, and that output is not the
    code) and says why it is unknown; run tags get the bare SHA
    (:func:`mhmoe.tracking.standard.source_tags`).
    """
    git = ["git", "--no-optional-locks", "-C", str(REPO)]  # read-only: no index refresh
    try:
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             timeout=20).stdout.strip()
        dirty = describe and subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                             f":(exclude){REPORTS_DIR}"],
                                            capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", False
    if not sha:
        return f"{UNKNOWN_COMMIT} (not a git checkout)" if describe else UNKNOWN_COMMIT
    return sha + (" (with uncommitted changes)" if dirty else "")
