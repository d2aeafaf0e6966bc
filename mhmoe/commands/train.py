"""``mhmoe train``: train one model on the resolved config, tracked in MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhmoe.commands.throughput import add_throughput_flags
from mhmoe.configbase import ConfigError
from mhmoe.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhmoe train",
        description="Train one model. Config = preset, then --config FILE, then key=value overrides.",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. moe.heads=3")
    parser.add_argument("--preset", default="cpu-small", help=f"one of {sorted(PRESETS)} (default cpu-small)")
    parser.add_argument("--config", help="YAML file of config sections merged over the preset")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and budget, then exit")
    parser.add_argument("--max-steps", type=int, help="shorthand for train.max_steps=N")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or SQLite in MHMOE_HOME)")
    parser.add_argument("--experiment", default="mhmoe", help="MLflow experiment name")
    parser.add_argument("--run-name", help="MLflow run name (default: the variant label)")
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoint folder (default: MHMOE_HOME/checkpoints/runs/<run id>)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_throughput_flags(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from mhmoe.budget import summary
    from mhmoe.memory import check_cuda_memory, estimate_compute, planned_precision, preflight_lines
    from mhmoe.run_config import parse_overrides, resolve_run_config

    try:
        overrides = parse_overrides(args.overrides)
        if args.max_steps is not None:
            overrides["train.max_steps"] = args.max_steps
        cfg = resolve_run_config(args.preset, args.config, overrides)
        if not args.dry_run:  # the dry run prints the estimate instead
            check_cuda_memory(cfg)
    except ConfigError as err:
        print(f"mhmoe train: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(cfg.to_yaml())
        for key, value in summary(cfg.model, cfg.moe, cfg.quant, seq_len=cfg.train.seq_len).items():
            print(f"{key}: {value:,}")
        compute = estimate_compute(cfg, gpu_tflops=args.gpu_tflops, mfu=args.mfu, tokens_per_s=args.tokens_per_s)
        print("\n".join(preflight_lines(cfg, planned_precision(cfg), compute)))
        return 0

    from mhmoe.training.runner import find_checkpoint_dir, train

    checkpoint_dir = args.checkpoint_dir
    if args.resume and checkpoint_dir is None:
        checkpoint_dir = find_checkpoint_dir(args.resume, args.tracking_uri)
    result = train(cfg, tracking_uri=args.tracking_uri, experiment_name=args.experiment, run_name=args.run_name,
                   run_id=args.resume, checkpoint_dir=checkpoint_dir, resume=bool(args.resume),
                   progress=not args.no_progress)
    print(f"run id: {result.run_id}")
    for key, value in sorted(result.metrics.items()):
        print(f"{key}: {value:.4f}")
    print(f"final checkpoint: {result.checkpoint_path}")
    return 0
