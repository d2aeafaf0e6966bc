"""``mhmoe sweep``: plan, submit, work, run and inspect a sweep (an Optuna study used as a queue).

    mhmoe sweep plan SPEC                       resolved grid + budget table; creates nothing
    mhmoe sweep submit SPEC [--storage URL]     enqueue the points missing from the study
    mhmoe sweep work SPEC|--study NAME [--devices 0,1 | --cpu-workers N] [--max-trials N]
    mhmoe sweep run SPEC [--workers N]          submit + local workers + report
    mhmoe sweep status SPEC|--study NAME        done / running / waiting / failed + ETA

SPEC is a YAML path or the name of a spec in experiments/ (``smoke``). Storage: --storage, else
$MHMOE_SWEEP_STORAGE, else the spec's ``storage``, else SQLite under the mhmoe home. An invalid
spec prints one line per problem and exits 2 before anything is created.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhmoe.configbase import ConfigError

EXIT_SPEC = 2


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="Optuna storage URL (sqlite:///... or postgresql://...)")


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--devices", help="comma-separated GPU ids: one worker per GPU (e.g. 0,1,2,3)")
    where.add_argument("--cpu-workers", type=int, help="CPU workers sharing the cores (default 1)")
    parser.add_argument("--devices-per-trial", type=int, default=1,
                        help="devices each worker holds (GPU ids grouped in order: 0,1 and 2,3 for 2); "
                             "a worker leaves trials needing more train.devices queued")
    parser.add_argument("--max-trials", type=int, help="trials per worker before it exits")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: the one recorded at submit)")
    parser.add_argument("--checkpoint-root", type=Path,
                        help="checkpoint folder shared by all nodes (default: <mhmoe home>/sweeps)")
    parser.add_argument("--no-linger", dest="linger", action="store_false",
                        help="exit when nothing waits, instead of waiting to pick up a dead worker's trial")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between queue polls while waiting")
    parser.add_argument("--heartbeat-interval", type=int, help="override the spec's heartbeat interval (s)")
    parser.add_argument("--grace-period", type=int, help="override the spec's grace period (s)")
    parser.add_argument("--log-dir", type=Path, help="write each worker's output to LOG_DIR/worker-*.log")


def _add_throughput_flags(parser: argparse.ArgumentParser) -> None:
    from mhmoe.commands.throughput import add_throughput_flags

    add_throughput_flags(parser)


def _throughput(args: argparse.Namespace) -> dict:
    return {"gpu_tflops": args.gpu_tflops, "mfu": args.mfu, "tokens_per_s": args.tokens_per_s}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mhmoe sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("plan", help="print the resolved grid; creates nothing")
    p.add_argument("spec")
    _add_throughput_flags(p)

    p = sub.add_parser("submit", help="create/reopen the study and enqueue missing points")
    p.add_argument("spec")
    _add_storage(p)
    p.add_argument("--tracking-uri", help="MLflow URI the workers log to (recorded in the study)")
    p.add_argument("--retry-failed", action="store_true", help="give points whose attempts all failed a new round")
    p.add_argument("--heartbeat-interval", type=int)
    p.add_argument("--grace-period", type=int)

    p = sub.add_parser("work", help="run workers that pull trials until the queue is empty")
    p.add_argument("spec", nargs="?")
    p.add_argument("--study", help="study name (instead of SPEC; e.g. on a node without the spec file)")
    _add_storage(p)
    _add_worker_flags(p)

    p = sub.add_parser("run", help="submit + N local workers + report")
    p.add_argument("spec")
    _add_storage(p)
    p.add_argument("--workers", type=int, help="CPU workers (default 1; ignored with --devices)")
    _add_worker_flags(p)
    p.add_argument("--no-report", dest="report", action="store_false")

    p = sub.add_parser("status", help="done / running / waiting / failed per point, trial rows, ETA")
    p.add_argument("spec", nargs="?")
    p.add_argument("--study")
    _add_storage(p)
    p.add_argument("--summary", action="store_true", help="counts only, no per-trial rows")
    return parser


def _spec_error(err: ConfigError) -> int:
    for line in str(err).splitlines():
        print(f"error: {line}", file=sys.stderr)
    return EXIT_SPEC


def _load(spec_arg: str):
    from mhmoe.sweep.plan import plan
    from mhmoe.sweep.spec import load_spec

    spec = load_spec(spec_arg, check_points=False)
    return spec, plan(spec)


def cmd_plan(args: argparse.Namespace) -> int:
    from mhmoe.sweep.plan import PLAN_COLUMNS, format_table, plan_rows

    spec, the_plan = _load(args.spec)
    groups = len(spec.groups)
    cells = 1
    for axis in spec.grid:
        cells *= len(axis.values)
    print(f"sweep {spec.name}: {len(the_plan.points)} trials ({groups} group(s) x {cells} grid point(s)); "
          f"match={spec.match.policy}; metric={the_plan.points[0].metric}")
    print(format_table(plan_rows(the_plan.points), PLAN_COLUMNS))
    for warning in the_plan.warnings:
        print(f"warning: {warning}")
    from mhmoe.memory import sweep_preflight_lines

    print("\n".join(sweep_preflight_lines(spec.name, [(p.label, p.config) for p in the_plan.points],
                                          **_throughput(args))))
    return 0


def _submit(args: argparse.Namespace, spec, points):
    from mhmoe.sweep.storage import redact, storage_url
    from mhmoe.sweep.submit import submit_sweep

    url = storage_url(args.storage, spec.storage)
    queue, result = submit_sweep(
        spec, points, storage=url, tracking_uri=getattr(args, "tracking_uri", None),
        heartbeat_interval=getattr(args, "heartbeat_interval", None),
        grace_period=getattr(args, "grace_period", None), retry_failed=getattr(args, "retry_failed", False),
    )
    print(f"sweep {spec.name}: enqueued {len(result.added)} new point(s), {result.existing} already in the study"
          + (f", {len(result.requeued)} failed point(s) re-queued" if result.requeued else "")
          + f" ({redact(url)})")
    return url, queue


def cmd_submit(args: argparse.Namespace) -> int:
    spec, the_plan = _load(args.spec)
    _submit(args, spec, list(the_plan.points))
    return 0


def _worker_options(args: argparse.Namespace, url: str, study: str):
    from mhmoe.sweep.worker import WorkerOptions

    return WorkerOptions(
        storage=url, study=study, tracking_uri=args.tracking_uri, checkpoint_root=args.checkpoint_root,
        max_trials=args.max_trials, linger=args.linger, poll_s=args.poll,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
    )


def _slots(args: argparse.Namespace, default_workers: int | None = None):
    from mhmoe.sweep.launch import worker_slots

    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    return worker_slots(devices, args.cpu_workers or default_workers, args.devices_per_trial)


def _study_target(args: argparse.Namespace) -> tuple[str, str]:
    """(storage URL, study name) from SPEC or --study."""
    from mhmoe.sweep.spec import load_spec
    from mhmoe.sweep.storage import storage_url

    if bool(args.spec) == bool(args.study):
        raise ConfigError("give either SPEC or --study NAME")
    if args.study:
        return storage_url(args.storage), args.study
    spec = load_spec(args.spec, check_points=False)
    return storage_url(args.storage, spec.storage), spec.name


def _require_study(url: str, name: str) -> bool:
    from mhmoe.sweep.queue import SweepQueue
    from mhmoe.sweep.storage import redact

    if SweepQueue.exists(url, name):
        return True
    print(f"error: no study {name!r} in {redact(url)}; run `mhmoe sweep submit SPEC` first", file=sys.stderr)
    return False


def cmd_work(args: argparse.Namespace) -> int:
    from mhmoe.sweep.launch import run_workers
    from mhmoe.sweep.queue import SweepQueue

    slots = _slots(args)  # bad device flags fail before any store is opened
    url, name = _study_target(args)
    if not _require_study(url, name):
        return 1
    queue = SweepQueue(url, name)
    pending = queue.pending()
    queue.close()
    if pending == (0, 0):
        print(f"sweep {name}: nothing waiting or running; `mhmoe sweep status` shows the results")
        return 0
    return run_workers(_worker_options(args, url, name), slots, log_dir=args.log_dir)


def cmd_run(args: argparse.Namespace) -> int:
    from mhmoe.sweep.launch import run_workers
    from mhmoe.sweep.status import format_status, sweep_status

    slots = _slots(args, args.workers)  # bad device flags fail before the study is created
    spec, the_plan = _load(args.spec)
    url, queue = _submit(args, spec, list(the_plan.points))
    pending = queue.pending()
    queue.close()
    code = 0
    if pending != (0, 0):
        code = run_workers(_worker_options(args, url, spec.name), slots, log_dir=args.log_dir)
    status = sweep_status(queue)
    print(format_status(spec.name, status, show_rows=False))
    if args.report:
        _report(spec, args.tracking_uri or queue.settings().get("tracking_uri"))
    return code or (0 if status.counts["failed"] == 0 and status.finished else 1)


def _report(spec, tracking_uri: str | None) -> None:
    try:
        from mhmoe.commands.report import main as report_main
    except ImportError:
        print("report skipped: mhmoe.commands.report is not available")
        return
    try:
        report_main([str(spec.path)] + (["--tracking-uri", tracking_uri] if tracking_uri else []))
    except Exception as err:  # the sweep's results are in MLflow either way
        print(f"warning: report failed: {err!r}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from mhmoe.sweep.queue import SweepQueue
    from mhmoe.sweep.status import format_status, sweep_status

    url, name = _study_target(args)
    if not _require_study(url, name):
        return 1
    print(format_status(name, sweep_status(SweepQueue(url, name)), show_rows=not args.summary))
    return 0


ACTIONS = {"plan": cmd_plan, "submit": cmd_submit, "work": cmd_work, "run": cmd_run, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return ACTIONS[args.action](args)
    except ConfigError as err:
        return _spec_error(err)


if __name__ == "__main__":
    sys.exit(main())
