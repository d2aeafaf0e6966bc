"""``mhmoe train``: train one model on the resolved config, tracked in MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.commands.throughput import add_throughput_flags
from mhmoe.config.base import ConfigError
from mhmoe.config.flags import folder, int_at_least
from mhmoe.config.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mhmoe train",
        description="Train one model. Config = preset, then --config FILE, then key=value overrides.",
        epilog="`mhmoe config [PREFIX]` lists every config key with its type, preset value and meaning.",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. moe.heads=3")
    parser.add_argument("--preset", default="cpu-small", help=f"one of {sorted(PRESETS)} (default cpu-small)")
    parser.add_argument("--config", help="YAML file of config sections merged over the preset")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config (a file --config accepts; the budget as comments), then exit")
    parser.add_argument("--max-steps", type=int_at_least(1), help="shorthand for train.max_steps=N")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or SQLite in MHMOE_HOME)")
    parser.add_argument("--experiment", default="mhmoe", help="MLflow experiment name")
    parser.add_argument("--run-name", help="MLflow run name (default: the variant label)")
    parser.add_argument("--checkpoint-dir", type=folder,
                        help="checkpoint folder (default: MHMOE_HOME/checkpoints/runs/<run id>)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="also print Lightning's and MLflow's own log lines")
    add_throughput_flags(parser)
    return parser


def _check_resume(run_id: str, tracking_uri: str | None) -> None:
    """``--resume RUN_ID`` names a run in the store; looking must not create an absent SQLite store."""
    from mhmoe.store.home import default_tracking_uri
    from mhmoe.store.urls import sqlite_file

    uri = tracking_uri or default_tracking_uri()
    store = sqlite_file(uri)
    if store is not None and not store.is_file():
        raise ConfigError(f"--resume={run_id!r}: no MLflow store at {uri}, so no such run; "
                          "pass the --tracking-uri the run was logged to")
    from mlflow.exceptions import MlflowException

    from mhmoe.tracking.client import mlflow_client

    try:
        run = mlflow_client(uri).get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--resume={run_id!r}: no such MLflow run in {uri}; give the run id that "
                          "`mhmoe train` printed") from None
    if store is not None:
        _check_artifacts_beside(run_id, run.info.artifact_uri, store)


def _check_artifacts_beside(run_id: str, artifact_uri: str, store: Path) -> None:
    """A SQLite store keeps its runs' artifacts in ``mlartifacts`` beside it, recorded as absolute
    paths that MLflow cannot change: a copied store's runs still name the original folder, and a
    resume would write its artifacts there."""
    from urllib.parse import unquote, urlparse

    from mhmoe.store.home import ARTIFACTS_DIR

    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return
    folder = Path(unquote(parsed.path)).resolve()
    beside = (store.parent / ARTIFACTS_DIR).resolve()
    if ARTIFACTS_DIR in folder.parts and not folder.is_relative_to(beside):
        root = Path(*folder.parts[:folder.parts.index(ARTIFACTS_DIR) + 1])
        raise ConfigError(f"--resume={run_id!r}: the run's artifacts are recorded in {root}, not beside its store "
                          f"{store} (a copied or moved home?); resume it where it was created, or start a new run "
                          "without --resume")


def _check_resumable(run_id: str, checkpoint_dir: Path, max_steps: int) -> None:
    """Refuse a resume that would retrain a finished run, or start one whose checkpoints are gone from step 0."""
    from mhmoe.training.checkpoint import CheckpointError
    from mhmoe.training.checkpoint_files import RESUME_ORDER, finished_step

    step = finished_step(checkpoint_dir)
    if step is not None and step >= max_steps:
        raise CheckpointError(f"--resume={run_id!r}: the run finished at step {step} (train.max_steps={max_steps}); "
                              "nothing to resume (a larger --max-steps trains it further)")
    if not any((checkpoint_dir / name).is_file() for name in RESUME_ORDER):
        raise CheckpointError(f"--resume={run_id!r}: the run's checkpoints are gone ({checkpoint_dir} holds no "
                              f"{' or '.join(RESUME_ORDER)}); to start fresh, run mhmoe train without --resume")


@refuses_bad_input("mhmoe train")
def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from mhmoe.config.run import parse_overrides, resolve_run_config
    from mhmoe.data.sources import check_local_paths
    from mhmoe.data.tokenizer import check_tokenizer_file
    from mhmoe.sizing.budget import summary
    from mhmoe.sizing.memory import estimate_compute, planned_precision, preflight_lines
    from mhmoe.store.urls import check_tracking_uri
    from mhmoe.training.hardware import check_cluster_launch
    from mhmoe.training.preflight import check_device_memory

    overrides = parse_overrides(args.overrides)
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    cfg = resolve_run_config(args.preset, args.config, overrides)
    # Everything cheap before a store or folder is created: data paths, the run to resume.
    check_local_paths(cfg.data)
    check_tokenizer_file(cfg.data)
    check_tracking_uri(args.tracking_uri, what="--tracking-uri")
    if args.resume:
        _check_resume(args.resume, args.tracking_uri)
    if args.dry_run:  # a file `--config` accepts: the resolved config, the budget as comments
        print(cfg.to_yaml().rstrip())
        for key, count in summary(cfg.architecture, seq_len=cfg.train.seq_len).items():
            print(f"# {key}: {count:,}")
        compute = estimate_compute(cfg, gpu_tflops=args.gpu_tflops, mfu=args.mfu, tokens_per_s=args.tokens_per_s)
        print("\n".join(f"# {line}" for line in preflight_lines(cfg, planned_precision(cfg), compute)))
        return 0
    check_device_memory(cfg)  # refuse before anything is created if the estimate does not fit
    check_cluster_launch(cfg)
    if not args.verbose:
        from mhmoe.training.quiet import quiet_library_logs

        quiet_library_logs()

    from mhmoe.training.request import TrainRequest
    from mhmoe.training.runner import find_checkpoint_dir, train

    checkpoint_dir = args.checkpoint_dir
    if args.resume:
        checkpoint_dir = checkpoint_dir or find_checkpoint_dir(args.resume, args.tracking_uri)
        _check_resumable(args.resume, checkpoint_dir, cfg.train.max_steps)
    from mhmoe.training.failures import Diverged

    try:
        result = train(TrainRequest(
            config=cfg, tracking_uri=args.tracking_uri, experiment_name=args.experiment, run_name=args.run_name,
            run_id=args.resume, checkpoint_dir=checkpoint_dir, resume=bool(args.resume),
            progress=not args.no_progress))
    except Diverged as err:  # the run is FAILED in MLflow with this reason; no traceback to read
        print(f"mhmoe train: {err}; the MLflow run is marked FAILED (try a lower optim.lr)", file=sys.stderr)
        return 1
    print(f"run id: {result.run_id}")
    for key, value in sorted(result.metrics.items()):
        print(f"{key}: {value:.4f}")
    print(f"final checkpoint: {result.checkpoint_path}")
    return 0
