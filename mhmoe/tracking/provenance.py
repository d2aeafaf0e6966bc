"""Where a run came from: the command line, recorded as a tag so reports can quote it."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from mhmoe.home import ENV_VAR


def command_line(argv: list[str] | None = None) -> str:
    """``[MHMOE_HOME=...] mhmoe sweep run ...`` for the console script, else the raw argv."""
    argv = list(sys.argv if argv is None else argv)
    if argv and (Path(argv[0]).name == "mhmoe" or argv[0].endswith(os.path.join("mhmoe", "cli.py"))):
        argv = ["mhmoe", *argv[1:]]
    home = os.environ.get(ENV_VAR)
    return (f"{ENV_VAR}={shlex.quote(home)} " if home else "") + shlex.join(argv)
