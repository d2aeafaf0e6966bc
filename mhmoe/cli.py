"""``mhmoe`` console script: a thin dispatcher to one module per subcommand.

Each subcommand lives in ``mhmoe.commands.<name>`` and exposes ``main(argv) -> int``; modules are
imported lazily so ``mhmoe budget`` does not pay for Lightning or MLflow imports.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

COMMANDS = {
    "budget": ("mhmoe.commands.budget", "FLOP/parameter budget table for a preset"),
    "smoke": ("mhmoe.commands.smoke", "budget table + forward/backward of every variant"),
    "train": ("mhmoe.commands.train", "train one model, tracked in MLflow"),
    "sweep": ("mhmoe.commands.sweep", "plan/submit/work/run/status an Optuna sweep"),
    "report": ("mhmoe.commands.report", "figures and tables for a sweep"),
    "eval": ("mhmoe.commands.eval", "lm-eval-harness evaluation of a checkpoint"),
    "lm-eval": ("mhmoe.commands.lm_eval", "lm-eval's own CLI with the mhmoe model and shipped tasks"),
    "export": ("mhmoe.commands.export", "a checkpoint as a Hugging Face model folder"),
    "ui": ("mhmoe.commands.ui", "start the MLflow UI on 127.0.0.1"),
    "config": ("mhmoe.commands.config", "every config key: type, preset value, what it does"),
    "data": ("mhmoe.commands.data", "prepare a config's tokenizer and token caches once, in parallel"),
}


def version() -> str:
    """The installed distribution's version (the source tree's when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("mhmoe")
    except PackageNotFoundError:
        from mhmoe import __version__

        return __version__


def usage() -> str:
    lines = ["usage: mhmoe [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`mhmoe COMMAND --help` describes each command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"mhmoe {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mhmoe: unknown command {name!r}; choose one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        code = int(module.main(rest) or 0)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `mhmoe config | head`: the reader is gone, which is not an error of ours. Point stdout at
        # /dev/null so the exit flush does not raise again, and exit as a process killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
