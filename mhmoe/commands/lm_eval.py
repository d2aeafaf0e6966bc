"""``mhmoe lm-eval ...``: lm-evaluation-harness's own CLI, with the ``mhmoe`` model registered.

Every lm-eval flag passes through unchanged (``--model mhmoe --model_args pretrained=CKPT --tasks
... --num_fewshot ... --output_path ... --log_samples``). lm-eval 0.4 has no plugin entry point, so
a plain ``lm_eval --model mhmoe`` cannot find the model; this command imports the adapter first.
The shipped tasks are rendered into ``<home>/eval/tasks`` (concrete YAMLs with absolute data
paths) and that folder is passed as ``--include_path`` unless one is given. Without ``--device``
on a machine with no GPU it runs on the CPU (lm-eval's own default is ``cuda:0``); an explicit
``--device cuda`` there is a one-line error.

Task YAMLs the user points lm-eval to (``--include_path``, ``--tasks`` folders and ``*.yaml`` files,
the same keys of a ``--config`` file) that may run code (lm-eval's ``!function``, however spelled;
see :mod:`mhmoe.evaluation.task_code`) are refused, exit 2, unless ``--allow-task-code`` is given;
that flag is mhmoe's and is taken out before lm-eval sees the arguments. The arguments are read
with lm-eval's own parser, so abbreviations and short flags are checked as lm-eval reads them.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any

from mhmoe.commands.bad_input import EXIT_BAD_INPUT, refuse, refuses_bad_input

INCLUDE_FLAG = "--include_path"
DEVICE_FLAG = "--device"
CONSENT_FLAG = "--allow-task-code"


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def lm_eval_argv(argv: list[str], tasks_dir: str, *, has_gpu: bool) -> list[str]:
    """``sys.argv`` for lm-eval: the user's arguments, plus the shipped tasks' folder if none is
    included and ``--device cpu`` if none is chosen on a machine without a GPU (lm-eval's default
    is ``cuda:0``)."""
    if not argv or argv[0] in ("-h", "--help", "ls", "validate"):
        return ["lm-eval", *argv]
    extra = [] if _given(argv, INCLUDE_FLAG) else [INCLUDE_FLAG, tasks_dir]
    extra += [] if _given(argv, DEVICE_FLAG) or has_gpu else [DEVICE_FLAG, "cpu"]
    return ["lm-eval", *argv, *extra]


def _config(path: str | None) -> dict[str, Any]:
    """A ``--config`` file's settings; {} when it cannot be read (lm-eval then refuses it itself)."""
    if not path:
        return {}
    from lm_eval.config.evaluate_config import EvaluatorConfig

    try:
        return EvaluatorConfig.load_yaml_config(path)
    except (OSError, ValueError, TypeError):
        return {}


def task_paths(args: argparse.Namespace) -> list[Path]:
    """The task YAML folders and files lm-eval reads for these parsed arguments: the include path,
    and ``--tasks`` items that are folders or ``*.yaml`` globs (command line over ``--config``)."""
    config = _config(getattr(args, "config", None))
    include = getattr(args, "include_path", None) or config.get("include_path")
    tasks = getattr(args, "tasks", None) or config.get("tasks")
    paths = [Path(p) for p in (include if isinstance(include, list) else [include]) if isinstance(p, str)]
    for value in tasks if isinstance(tasks, list) else [tasks]:
        for item in (t.strip() for t in value.split(",")) if isinstance(value, str) else ():
            if Path(item).is_dir():
                paths.append(Path(item))
            elif item.endswith(".yaml"):
                paths += [Path(p) for p in sorted(glob.glob(item))]
    return paths


def parse_lm_eval_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` read by lm-eval's own parser (SystemExit for --help and for arguments it refuses)."""
    from lm_eval._cli import HarnessCLI

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # HarnessCLI parses sys.argv (and may insert "run" into it)
    try:
        return HarnessCLI().parse_args()
    finally:
        sys.argv = saved


def task_code_refusal(args: argparse.Namespace) -> str | None:
    """One line naming a task YAML the parsed arguments point to that may run code; else None."""
    from mhmoe.evaluation.task_code import task_code_problem

    return task_code_problem(task_paths(args), f"pass {CONSENT_FLAG}")


@refuses_bad_input("mhmoe lm-eval")
def main(argv: list[str]) -> int:
    allow_code = CONSENT_FLAG in argv
    argv = [a for a in argv if a != CONSENT_FLAG]
    import torch
    from lm_eval.__main__ import cli_evaluate

    from mhmoe.evaluation.lm_adapter import check_model_args  # registers the "mhmoe" model with lm-eval
    from mhmoe.evaluation.local_tasks import HELDOUT_TASK, render_local_tasks
    from mhmoe.training.checkpoint import read_checkpoint

    try:  # before anything is written to the home
        args = parse_lm_eval_args(argv)
    except SystemExit as stop:  # --help, or arguments lm-eval's parser refuses: it has said why
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_BAD_INPUT
    if getattr(args, "model", None) == "mhmoe":
        model_args = getattr(args, "model_args", None) or {}
        check_model_args(model_args)
        read_checkpoint(model_args["pretrained"])  # a bad file: CheckpointError before lm-eval indexes its tasks
    refusal = None if allow_code else task_code_refusal(args)
    if refusal:
        print(f"mhmoe lm-eval: {refusal}", file=sys.stderr)
        return EXIT_BAD_INPUT
    wanted = {HELDOUT_TASK} if any(HELDOUT_TASK in a for a in argv) else set()
    tasks_dir = render_local_tasks(build_data_for=wanted)
    saved = sys.argv
    sys.argv = lm_eval_argv(list(argv), str(tasks_dir), has_gpu=torch.cuda.is_available())
    try:
        cli_evaluate()
    except ValueError as err:  # lm-eval's and the adapter's refusals (unknown task, device, checkpoint)
        return refuse("mhmoe lm-eval", err)
    except SystemExit as stop:  # argparse / lm-eval exit codes pass through
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_BAD_INPUT
    finally:
        sys.argv = saved
    return 0
