"""``mhmoe eval``: lm-eval tasks on a checkpoint, logged to the MLflow run that trained it."""

from __future__ import annotations

import argparse

from mhmoe.commands.bad_input import Parser, refuse, refuses_bad_input
from mhmoe.config.flags import int_at_least, positive_float


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mhmoe eval",
        description="Evaluate a checkpoint with lm-evaluation-harness. Offline by default: the shipped "
                    "local tasks always work; standard tasks (hellaswag, arc_easy, ...) need --online "
                    "or their dataset already cached in MHMOE_HOME/huggingface.",
    )
    parser.add_argument("checkpoint", nargs="?", help="an mhmoe checkpoint (.ckpt) written by mhmoe train")
    parser.add_argument("--tasks", help="comma list of task/group/tag names, task YAML files or task directories")
    parser.add_argument("--list-tasks", action="store_true", help="print the shipped local task names and exit")
    parser.add_argument("--limit", type=positive_float, help="examples per task (N, or a fraction < 1)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default: the current home's store, or $MLFLOW_TRACKING_URI)")
    parser.add_argument("--run-id", help="MLflow run to log to (default: the run recorded in the checkpoint)")
    parser.add_argument("--no-log", action="store_true", help="print the results only, log nothing to MLflow")
    parser.add_argument("--online", action="store_true", help="allow Hugging Face hub downloads (default: offline)")
    parser.add_argument("--include-path", action="append", default=[], metavar="DIR",
                        help="also index task YAMLs in DIR so --tasks can name them (repeatable)")
    parser.add_argument("--allow-task-code", action="store_true",
                        help="let your task YAMLs use lm-eval's !function, however spelled (runs Python from "
                             "their folder)")
    return parser


@refuses_bad_input("mhmoe eval")
def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_tasks:
        from mhmoe.evaluation.local_tasks import local_task_names

        print("\n".join(local_task_names()))
        return 0
    if not args.checkpoint or not args.tasks:
        parser.error("give a CHECKPOINT and --tasks (or --list-tasks)")
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)

    from mhmoe.store.urls import check_tracking_uri
    from mhmoe.training.checkpoint import CheckpointError, read_checkpoint

    check_tracking_uri(args.tracking_uri, what="--tracking-uri")
    from mhmoe.evaluation.runner import evaluate_checkpoint, split_tasks
    from mhmoe.evaluation.task_manager import EvalError, check_no_task_code, user_task_paths

    try:  # task folders that may run code are refused as bad input, before the checkpoint is read
        check_no_task_code(user_task_paths(split_tasks(args.tasks), args.include_path), args.allow_task_code)
    except EvalError as err:
        return refuse("mhmoe eval", err)
    # A bad file is refused (CheckpointError, exit 2) before evaluation sets up its caches in the home.
    read_checkpoint(args.checkpoint)
    try:
        results = evaluate_checkpoint(args.checkpoint, args.tasks, limit=limit, batch_size=args.batch_size,
                                      device=args.device, run_id=args.run_id, tracking_uri=args.tracking_uri,
                                      log=not args.no_log, online=args.online, include_paths=args.include_path,
                                      allow_code=args.allow_task_code)
    except CheckpointError:
        raise  # bad input: refuses_bad_input prints it, exit 2
    except (EvalError, ValueError) as err:  # evaluation cannot run as asked: unknown task, run, device
        return refuse("mhmoe eval", err)
    from lm_eval.utils import make_table

    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    if not args.no_log:
        config = results["config"]
        print(f"logged eval/<task>/<metric> and eval/results.json to MLflow run {config['mlflow_run_id']} "
              f"({config['tracking_uri']})")
    return 0
