"""``mhmoe lm-eval ...``: lm-evaluation-harness's own CLI, with the ``mhmoe`` model registered.

Every lm-eval flag passes through unchanged (``--model mhmoe --model_args pretrained=CKPT --tasks
... --num_fewshot ... --output_path ... --log_samples``). lm-eval 0.4 has no plugin entry point, so
a plain ``lm_eval --model mhmoe`` cannot find the model; this command imports the adapter first.
The shipped tasks are rendered into ``<home>/eval/tasks`` (concrete YAMLs with absolute data
paths) and that folder is passed as ``--include_path`` unless one is given. Without ``--device``
on a machine with no GPU it runs on the CPU (lm-eval's own default is ``cuda:0``); an explicit
``--device cuda`` there is a one-line error.
"""

from __future__ import annotations

import sys

INCLUDE_FLAG = "--include_path"
DEVICE_FLAG = "--device"


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


def main(argv: list[str]) -> int:
    import torch
    from lm_eval.__main__ import cli_evaluate

    import mhmoe.evaluation.lm_adapter  # noqa: F401 - registers the "mhmoe" model with lm-eval
    from mhmoe.evaluation.local_tasks import HELDOUT_TASK, render_local_tasks

    wanted = {HELDOUT_TASK} if any(HELDOUT_TASK in a for a in argv) else set()
    tasks_dir = render_local_tasks(build_data_for=wanted)
    saved = sys.argv
    sys.argv = lm_eval_argv(list(argv), str(tasks_dir), has_gpu=torch.cuda.is_available())
    try:
        cli_evaluate()
    except ValueError as err:  # e.g. the adapter's device or checkpoint refusal: one line, not a traceback
        print(f"mhmoe lm-eval: {err}", file=sys.stderr)
        return 1
    except SystemExit as stop:  # argparse / lm-eval exit codes pass through
        return int(stop.code or 0) if not isinstance(stop.code, str) else 2
    finally:
        sys.argv = saved
    return 0
