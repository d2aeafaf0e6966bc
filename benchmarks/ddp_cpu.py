"""CPU data parallel: 2 DDP rank processes (gloo, 1 thread each) vs one process with 2 threads.

Run: .venv/bin/python benchmarks/ddp_cpu.py [--preset cpu-small] [--steps 60] [--rounds 3]

Both train the same config through ``mhmoe.training.runner.train`` (the same global batch and data
order; validation only at the end), alternating single / DDP each round. Throughput is the median
of the logged ``perf/tokens_per_s`` (global tokens per second over each logging interval, rank 0's
clock, start-up and the first interval excluded), so process start-up and MLflow are not counted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import mlflow

from mhmoe.config.run import resolve_run_config
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train


def tokens_per_s(preset: str, steps: int, devices: int, root: Path) -> float:
    overrides = {"train.accelerator": "cpu", "train.devices": devices, "train.num_threads": 2 // devices,
                 "train.max_steps": steps, "train.val_every": steps, "train.log_every": 5,
                 "train.routing_every": steps, "data.val_max_windows": 4}
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    result = train(TrainRequest(
        config=resolve_run_config(preset, None, overrides), tracking_uri=tracking, progress=False,
        checkpoint_dir=root / f"ckpt-{devices}"))
    history = mlflow.MlflowClient(tracking).get_metric_history(result.run_id, "perf/tokens_per_s")
    values = [m.value for m in sorted(history, key=lambda m: m.step)][1:]
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.preset}, {args.steps} steps per run; tokens/s (global)")
    print(f"{'round':>5} {'1 proc x 2 threads':>19} {'2 DDP ranks x 1':>16} {'DDP / single':>13}")
    ratios = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            single = tokens_per_s(args.preset, args.steps, 1, Path(tmp))
            ddp = tokens_per_s(args.preset, args.steps, 2, Path(tmp))
        ratios.append(ddp / single)
        print(f"{i + 1:>5} {single:>19,.0f} {ddp:>16,.0f} {ddp / single:>12.2f}x", flush=True)
    print(f"DDP / single over {args.rounds} rounds: {min(ratios):.2f}x - {max(ratios):.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
