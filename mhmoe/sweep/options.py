"""How one sweep worker runs: declared once, as :class:`WorkerOptions`.

The ``mhmoe sweep work|run`` flags, the ``python -m mhmoe.sweep.worker`` arguments and the command
line the supervisor spawns a GPU worker with are all derived from the fields below (flag name,
type, help text), so a new option is one field.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhmoe.config.flags import folder, int_at_least, positive_float


def _flag(help_text: str, *, flag: str | None = None, parse: Any = str, cli: bool = True) -> dict[str, Any]:
    """Field metadata: the help text, the flag (default ``--field-name``), the argparse type, and
    whether ``mhmoe sweep`` offers it (the supervisor sets the others per worker)."""
    return {"help": help_text, "flag": flag, "parse": parse, "cli": cli}


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How one worker runs (all but the storage URL and study name have defaults)."""

    storage: str = field(metadata=_flag("Optuna storage URL", cli=False))
    study: str = field(metadata=_flag("study (sweep) name", cli=False))
    tracking_uri: str | None = field(default=None, metadata=_flag(
        "MLflow URI (default: $MLFLOW_TRACKING_URI, else the one recorded at submit)"))
    checkpoint_root: Path | None = field(default=None, metadata=_flag(
        "checkpoint folder shared by all nodes; checkpoints go to <root>/<sweep>/<config hash> "
        "(default: <mhmoe home>/sweeps)", parse=folder))
    max_trials: int | None = field(default=None, metadata=_flag(
        "trials per worker before it exits (default: until the queue is empty)", parse=int_at_least(1)))
    threads: int = field(default=0, metadata=_flag("torch CPU threads (0 = torch's default)", parse=int, cli=False))
    linger: bool = field(default=True, metadata=_flag(
        "exit when nothing waits, instead of waiting to pick up a dead worker's trial", flag="--no-linger"))
    poll_s: float = field(default=5.0, metadata=_flag(
        "seconds between queue polls while waiting", flag="--poll", parse=positive_float))
    heartbeat_interval: int | None = field(default=None, metadata=_flag(
        "override the sweep's heartbeat interval (s)", parse=int_at_least(1)))
    grace_period: int | None = field(default=None, metadata=_flag(
        "override the sweep's grace period (s); at least 3 x the heartbeat interval", parse=int_at_least(1)))
    disk_full_pause: float = field(default=300.0, metadata=_flag(
        "seconds the retry of a trial that failed on a full disk waits before any worker claims it",
        parse=positive_float))
    devices: int = field(default=1, metadata=_flag(
        "devices this worker holds (its CUDA_VISIBLE_DEVICES); it leaves trials needing more queued",
        parse=int_at_least(1), cli=False))

    def argv(self) -> list[str]:
        """These options as ``python -m mhmoe.sweep.worker`` arguments (what :func:`parse` reads back)."""
        out: list[str] = []
        for f, flag in _fields():
            value = getattr(self, f.name)
            if f.type in (bool, "bool"):
                out += [flag] if value != f.default else []
            elif value is not None:
                out += [flag, str(value)]
        return out


def _fields() -> list[tuple[dataclasses.Field, str]]:
    return [(f, f.metadata["flag"] or "--" + f.name.replace("_", "-")) for f in dataclasses.fields(WorkerOptions)]


def add_worker_arguments(parser: argparse.ArgumentParser, *, cli: bool = True) -> None:
    """The options as flags: those ``mhmoe sweep work|run`` offers (``cli``), else every one."""
    for f, flag in _fields():
        if cli and not f.metadata["cli"]:
            continue
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action="store_false", help=f.metadata["help"])
            continue
        required = f.default is dataclasses.MISSING
        parser.add_argument(flag, dest=f.name, type=f.metadata["parse"], required=required,
                            default=None if required else f.default, help=f.metadata["help"])


def worker_options(args: argparse.Namespace, **given: Any) -> WorkerOptions:
    """The options parsed by :func:`add_worker_arguments`, plus ``given`` (e.g. storage and study)."""
    names = {f.name for f in dataclasses.fields(WorkerOptions)}
    return WorkerOptions(**{**{k: v for k, v in vars(args).items() if k in names}, **given})


def parse(argv: list[str]) -> WorkerOptions:
    parser = argparse.ArgumentParser(prog="python -m mhmoe.sweep.worker",
                                     description="One sweep worker: claim -> train -> tell until the queue is empty.")
    add_worker_arguments(parser, cli=False)
    return worker_options(parser.parse_args(argv))


__all__ = ["WorkerOptions", "add_worker_arguments", "parse", "worker_options"]
