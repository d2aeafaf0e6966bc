"""Sweep overhead: fixed cost per trial vs training time, and 2 workers vs 1 on the smoke grid.

Run: .venv/bin/python benchmarks/sweep_overhead.py [--spec smoke] [--other-steps N] [--repeats 2]

Each run is a real ``mhmoe sweep run SPEC --no-report`` (submit + worker processes + real training
+ MLflow) on a fresh SQLite Optuna store and MLflow store, sharing one warmed MHMOE_HOME (corpus
and tokenizer cached, as after a first run). Measured:

* **1 worker vs 2 workers** wall time of the whole command on the spec's grid (2 cores: 1 worker
  uses 2 torch threads, 2 workers 1 thread each). Target: 2 workers >= 1.7x faster.
* **Fixed overhead per trial**, all of it outside the optimizer steps:
  - worker start: process start + torch/Lightning/MLflow imports + storage + MLflow parent run,
    paid once per worker (time from the command's start to the worker's first claim);
  - queue + MLflow outside ``train()``: claim, child-run creation, tell (``overhead_seconds``);
  - fixed part inside ``train()``: data module, model build, MLflow logger and params, final
    validation and checkpoint -- the intercept of ``train()`` time vs steps from a second 1-worker
    run at ``--other-steps`` steps (same points, so the per-step cost is the slope).
  Target: (worker start / trials per worker) + queue/MLflow + fixed train() part <= 5 s.

Timings on a shared 2-core host are noisy; the script prints the load average next to them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_sweep(spec: Path, workdir: Path, workers: int, tracking: str) -> tuple[float, list]:
    """Wall time of ``sweep run`` and its trials (fresh Optuna store, the shared MLflow store)."""
    from mhmoe.sweep.queue import SweepQueue
    from mhmoe.sweep.spec import load_spec

    workdir.mkdir(parents=True)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    cmd = [sys.executable, "-m", "mhmoe.cli", "sweep", "run", str(spec), "--workers", str(workers),
           "--storage", storage, "--tracking-uri", tracking,
           "--checkpoint-root", str(workdir / "ckpt"), "--poll", "1", "--no-report"]
    start = time.time()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    wall = time.time() - start
    trials = SweepQueue(storage, load_spec(spec).name).trials()
    if not all(t.state.name == "COMPLETE" for t in trials):
        raise SystemExit(f"not every trial completed: {[t.state.name for t in trials]}")
    return wall, [(t, start) for t in trials]


def first_claims(trials: list) -> list[float]:
    """Seconds from the command's start to each worker's first claim."""
    by_worker: dict[str, float] = {}
    for trial, start in trials:
        claimed = trial.datetime_start.timestamp() - start
        worker = trial.user_attrs["worker"]
        by_worker[worker] = min(by_worker.get(worker, claimed), claimed)
    return sorted(by_worker.values())


def queue_phase(trials: list) -> float:
    """Seconds from the first claim to the last tell: the part that workers parallelise."""
    starts = [t.datetime_start.timestamp() for t, _ in trials]
    ends = [t.datetime_complete.timestamp() for t, _ in trials]
    return max(ends) - min(starts)


def spec_with_steps(spec_name: str, steps: int, out: Path) -> Path:
    from mhmoe.sweep.spec import spec_path

    data = yaml.safe_load(spec_path(spec_name).read_text())
    data["budget"] = {"steps": steps}
    data["name"] = f"{data.get('name', spec_name)}_{steps}"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def warm(spec: Path, tracking: str) -> None:
    """Fill the corpus / tokenizer / token caches and create the MLflow store, as after a first sweep."""
    import mlflow

    from mhmoe.data.datamodule import MHMoEDataModule
    from mhmoe.sweep import expand, load_spec

    mlflow.MlflowClient(tracking).search_experiments()
    cfg = expand(load_spec(spec))[0].config
    MHMoEDataModule(cfg.data, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, seed=0,
                    max_steps=cfg.train.max_steps).prepare_data()


def min_train_seconds(runs: list[list]) -> float:
    """Mean over points of each point's fastest ``train()`` across repeats (noise only adds time)."""
    best: dict[str, float] = {}
    for trials in runs:
        for trial, _ in trials:
            key = trial.user_attrs["config_hash"]
            best[key] = min(best.get(key, float("inf")), trial.user_attrs["train_seconds"])
    return statistics.fmean(best.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="smoke")
    parser.add_argument("--other-steps", type=int, help="steps of the second 1-worker run (default: half)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the fastest counts")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    os.environ.setdefault("MHMOE_HOME", str(tmp / "home"))

    from mhmoe.sweep import expand, load_spec
    from mhmoe.sweep.spec import spec_path

    spec = spec_path(args.spec)
    points = expand(load_spec(spec))
    steps = {p.config.train.max_steps for p in points}
    assert len(steps) == 1, "the benchmark assumes one step budget for the grid"
    short_steps = steps.pop()
    other_steps = args.other_steps or max(1, short_steps // 2)
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    warm(spec, tracking)
    other_spec = spec_with_steps(args.spec, other_steps, tmp / "other.yaml")
    print(f"spec {args.spec}: {len(points)} trials x {short_steps} steps; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start; {args.repeats} interleaved repeats, fastest counts")

    walls: dict[str, list[float]] = {"1": [], "2": [], "other": []}
    trials: dict[str, list[list]] = {"1": [], "2": [], "other": []}
    for r in range(args.repeats):
        for key, path, workers in (("1", spec, 1), ("2", spec, 2), ("other", other_spec, 1)):
            wall, run = run_sweep(path, tmp / f"r{r}-{key}", workers=workers, tracking=tracking)
            walls[key].append(wall)
            trials[key].append(run)
            print(f"  repeat {r}: {path.stem}, {workers} worker(s) -> {wall:.1f} s", flush=True)

    wall_1, wall_2 = min(walls["1"]), min(walls["2"])
    busy_1 = min(queue_phase(run) for run in trials["1"])
    busy_2 = min(queue_phase(run) for run in trials["2"])
    train_short, train_other = min_train_seconds(trials["1"]), min_train_seconds(trials["other"])
    per_step = (train_other - train_short) / (other_steps - short_steps)
    fixed_in_train = train_short - per_step * short_steps
    outside = statistics.median(t.user_attrs["overhead_seconds"] for run in trials["1"] + trials["2"] for t, _ in run)
    start_1 = min(first_claims(run)[0] for run in trials["1"])
    start_2 = min(statistics.fmean(first_claims(run)) for run in trials["2"])
    amortised = start_1 / len(points)
    per_trial = amortised + outside + fixed_in_train

    print("\n1 worker vs 2 workers (whole `sweep run`, wall seconds, fastest repeat)")
    print(f"  1 worker (2 threads):  {wall_1:6.1f} s   all: {', '.join(f'{w:.1f}' for w in walls['1'])}")
    print(f"  2 workers (1 thread):  {wall_2:6.1f} s   all: {', '.join(f'{w:.1f}' for w in walls['2'])}")
    print(f"  speedup {wall_1 / wall_2:.2f}x  (target >= 1.7x)")
    print(f"  queue phase only (first claim -> last tell): {busy_1:.1f} s vs {busy_2:.1f} s, "
          f"speedup {busy_1 / busy_2:.2f}x")
    print("\nfixed overhead per trial (seconds)")
    print(f"  worker start to first claim:     {start_1:5.1f} (1 worker), {start_2:.1f} (2 workers, mean); "
          f"amortised over {len(points)} trials: {amortised:.2f}")
    print(f"  queue + MLflow outside train():  {outside:5.2f}")
    print(f"  fixed part of train():           {fixed_in_train:5.2f}  (train() {train_short:.2f} s at "
          f"{short_steps} steps, {train_other:.2f} s at {other_steps}; {per_step * 1000:.0f} ms/step)")
    print(f"  total fixed per trial:           {per_trial:5.2f}  (target <= 5 s)")
    print(f"  training steps per trial:        {per_step * short_steps:5.2f} at {short_steps} steps")
    print(f"\nload average {os.getloadavg()[0]:.1f} at end; scratch {tmp}")


if __name__ == "__main__":
    main()
