"""``mhmoe sweep``: plan, submit, work, run and inspect a sweep (an Optuna study used as a queue).

    mhmoe sweep plan SPEC                       resolved grid + budget table; creates nothing
    mhmoe sweep submit SPEC [--storage URL]     enqueue the points missing from the study
    mhmoe sweep work SPEC|--study NAME [--devices 0,1 | --cpu-workers N] [--max-trials N]
    mhmoe sweep run SPEC [--workers N]          submit + local workers + verdict + report
    mhmoe sweep extend SPEC [--workers N]       the same for an existing sweep (e.g. seeds.max raised)
    mhmoe sweep status SPEC|--study NAME        done / running / waiting / failed + ETA

SPEC is a YAML path or the name of a spec in experiments/ (``smoke``). Storage: --storage, else
$MHMOE_SWEEP_STORAGE, else the spec's ``storage``, else SQLite under the mhmoe home. An invalid
spec prints one line per problem and exits 2 before anything is created.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.config.base import ConfigError
from mhmoe.config.flags import folder, int_at_least
from mhmoe.sweep.options import add_worker_arguments, worker_options


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="Optuna storage URL (sqlite:///... or postgresql://...)")


def _add_local_run_flags(p: argparse.ArgumentParser) -> None:
    """``run`` and ``extend``: a spec, local workers, and the report at the end."""
    p.add_argument("spec", help=SPEC_HELP)
    _add_spec_overrides(p)
    _add_storage(p)
    p.add_argument("--workers", type=int_at_least(1), help="CPU workers (default 1; ignored with --devices)")
    _add_worker_flags(p)
    p.add_argument("--no-report", dest="report", action="store_false", help="do not run `mhmoe report` at the end")


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--devices", help="comma-separated GPU ids: one worker per GPU (e.g. 0,1,2,3)")
    where.add_argument("--cpu-workers", type=int_at_least(1), help="CPU workers sharing the cores (default 1)")
    parser.add_argument("--devices-per-trial", type=int_at_least(1), default=1,
                        help="devices each worker holds (GPU ids grouped in order: 0,1 and 2,3 for 2); "
                             "a worker leaves trials needing more train.devices queued")
    add_worker_arguments(parser)  # --tracking-uri, --checkpoint-root, --max-trials, --no-linger, --poll, ...
    parser.add_argument("--log-dir", type=folder, help="write each worker's output to LOG_DIR/worker-*.log")


SPEC_HELP = "sweep spec: a YAML path or the name of a shipped spec (smoke, paper_v2_cpu, paper_v2, ...)"


def _add_command(sub, name: str, *, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's word
    """A subcommand whose one-line help (``mhmoe sweep --help``) is also its own description (``--help``)."""
    return sub.add_parser(name, help=help, description=f"mhmoe sweep {name}: {help}.")


def _add_spec_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one value of the spec (repeatable): a spec path such as budget.steps=200, "
                             "seeds.max=10, grid.moe.heads=[2,3], or a config key such as optim.lr=1e-3 (into "
                             "base.overrides); overrides that change the points name a new study")
    parser.add_argument("--name", help="the sweep's (study's) name instead of the spec's")


def _add_throughput_flags(parser: argparse.ArgumentParser) -> None:
    from mhmoe.commands.throughput import add_throughput_flags

    add_throughput_flags(parser)


def _throughput(args: argparse.Namespace) -> dict:
    return {"gpu_tflops": args.gpu_tflops, "mfu": args.mfu, "tokens_per_s": args.tokens_per_s}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mhmoe sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)

    p = _add_command(sub, "plan", help="print the resolved grid; creates nothing")
    p.add_argument("spec", help=SPEC_HELP)
    _add_spec_overrides(p)
    _add_throughput_flags(p)

    p = _add_command(sub, "submit", help="create/reopen the study and enqueue missing points")
    p.add_argument("spec", help=SPEC_HELP)
    _add_spec_overrides(p)
    _add_storage(p)
    p.add_argument("--tracking-uri", help="MLflow URI the workers log to (recorded in the study)")
    p.add_argument("--retry-failed", action="store_true", help="give points whose attempts all failed a new round")
    p.add_argument("--heartbeat-interval", type=int_at_least(1), help="override the spec's heartbeat interval (s)")
    p.add_argument("--grace-period", type=int_at_least(1),
                   help="override the spec's grace period (s); at least 3 x the heartbeat interval")

    p = _add_command(sub, "work", help="run workers that pull trials until the queue is empty")
    p.add_argument("spec", nargs="?", help=SPEC_HELP + " (or give --study)")
    p.add_argument("--study", help="study name (instead of SPEC; e.g. on a node without the spec file)")
    _add_spec_overrides(p)
    _add_storage(p)
    _add_worker_flags(p)

    p = _add_command(sub, "run", help="submit + N local workers + report")
    _add_local_run_flags(p)

    p = _add_command(sub, "extend", help="add what an existing sweep's spec now asks for (more seeds, new "
                                      "comparisons) + N local workers + report")
    _add_local_run_flags(p)

    p = _add_command(sub, "status", help="done / running / waiting / failed per point, trial rows, ETA")
    p.add_argument("spec", nargs="?", help=SPEC_HELP + " (or give --study)")
    p.add_argument("--study", help="study name (instead of SPEC)")
    _add_spec_overrides(p)
    _add_storage(p)
    p.add_argument("--summary", action="store_true", help="counts only, no per-trial rows")
    return parser


def _load(args: argparse.Namespace):
    """The spec (with ``--set``/``--name``) and its plan (the checks of what they name are in
    :mod:`mhmoe.sweep.checks`)."""
    from mhmoe.sweep.plan import plan

    spec = _spec(args)
    return spec, plan(spec)


def _spec(args: argparse.Namespace):
    from mhmoe.sweep.overrides import load_spec_with

    return load_spec_with(args.spec, args.set, args.name, say=print)


def _check_heartbeat(args: argparse.Namespace, interval: int, grace: int, where: str) -> None:
    """``--heartbeat-interval``/``--grace-period`` over ``interval``/``grace`` (from ``where``), checked together."""
    from mhmoe.sweep.spec import SpecError, heartbeat_problem

    cli_interval, cli_grace = getattr(args, "heartbeat_interval", None), getattr(args, "grace_period", None)
    problem = heartbeat_problem(
        cli_interval or interval, cli_grace or grace,
        interval_name="--heartbeat-interval" if cli_interval else f"{where} heartbeat.interval",
        grace_name="--grace-period" if cli_grace else f"{where} heartbeat.grace",
    )
    if problem:
        raise SpecError([problem])


def cmd_plan(args: argparse.Namespace) -> int:
    from mhmoe.sweep.checks import file_problems
    from mhmoe.sweep.tables import PLAN_COLUMNS, plan_rows
    from mhmoe.text_table import format_table

    spec, the_plan = _load(args)
    data_problems = file_problems(spec, the_plan.points)
    groups = len(spec.groups)
    cells = 1
    for axis in spec.grid:
        cells *= len(axis.values)
    print(f"sweep {spec.name}: {len(the_plan.points)} trials ({groups} group(s) x {cells} grid point(s)); "
          f"match={spec.match.policy}; metric={the_plan.metric}")
    print(format_table(plan_rows(the_plan.points), PLAN_COLUMNS))
    from mhmoe.sweep.scheduler import describe_plan

    print("\n".join(describe_plan(spec, the_plan.points)))
    for warning in (*the_plan.warnings, *data_problems):
        print(f"warning: {warning}")
    from mhmoe.sizing.memory import sweep_preflight_lines

    print("\n".join(sweep_preflight_lines(spec.name, [(p.label, p.config) for p in the_plan.points],
                                          **_throughput(args))))
    return 0


def _submit(args: argparse.Namespace, spec, points, slots=None):
    """Check, then create or reopen the study and enqueue ``points``; ``slots``: the local workers that
    will run them (``sweep run``/``extend``), None for ``sweep submit``."""
    from mhmoe.store.urls import check_tracking_uri
    from mhmoe.sweep.checks import submit_problems
    from mhmoe.sweep.spec import SpecError
    from mhmoe.sweep.storage import check_storage, redact, storage_url
    from mhmoe.sweep.submit import resolve_tracking_uri, submit_sweep

    url = storage_url(args.storage, spec.storage)
    # Every check before submit_sweep opens (and so creates) the study.
    check_storage(url)
    tracking_uri = resolve_tracking_uri(getattr(args, "tracking_uri", None), spec)
    check_tracking_uri(tracking_uri)
    _check_heartbeat(args, spec.heartbeat_interval, spec.grace_period, "the spec's")
    found = submit_problems(spec, points, tracking_uri=tracking_uri, slots=slots)
    if found.problems:
        raise SpecError(list(found.problems))
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
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
    spec, the_plan = _load(args)
    _submit(args, spec, list(the_plan.points))
    return 0


def _worker_options(args: argparse.Namespace, url: str, study: str):
    return worker_options(args, storage=url, study=study)


def _slots(args: argparse.Namespace, default_workers: int | None = None):
    from mhmoe.sweep.launch import worker_slots

    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    return worker_slots(devices, args.cpu_workers or default_workers, args.devices_per_trial)


def _study_target(args: argparse.Namespace) -> tuple[str, str]:
    """(storage URL, study name) from SPEC or --study."""
    from mhmoe.sweep.storage import check_storage, storage_url

    if bool(args.spec) == bool(args.study):
        raise ConfigError("give either SPEC or --study NAME")
    if args.study:
        url, name = storage_url(args.storage), args.study
    else:
        spec = _spec(args)
        url, name = storage_url(args.storage, spec.storage), spec.name
    check_storage(url)
    return url, name


def _require_study(url: str, name: str) -> None:
    """A study that is not there is bad input (exit 2), like any other name that names nothing."""
    from mhmoe.sweep.queue import SweepQueue
    from mhmoe.sweep.storage import redact, store_exists

    if store_exists(url) and SweepQueue.exists(url, name):  # an absent SQLite file is not created by looking
        return
    raise ConfigError(f"no study {name!r} in {redact(url)}; run `mhmoe sweep submit SPEC` first")


def _say_failed_points(queue) -> bool:
    """Whether points of the study failed for good (every attempt, in this run or an earlier one, by
    any worker, a reaped one included); if so, a line naming them: the last line of work/run."""
    failed = [point.label for point in queue.point_states() if point.state == "failed"]
    if failed:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        sys.stdout.flush()
        print(f"sweep {queue.study_name}: {len(failed)} point(s) failed for good: {shown}; "
              "`mhmoe sweep status` shows why", file=sys.stderr, flush=True)
    return bool(failed)


def cmd_work(args: argparse.Namespace) -> int:
    from mhmoe.store.urls import check_tracking_uri
    from mhmoe.sweep.launch import run_workers
    from mhmoe.sweep.queue import SweepQueue

    slots = _slots(args)  # bad device flags fail before any store is opened
    url, name = _study_target(args)
    check_tracking_uri(args.tracking_uri, what="--tracking-uri")
    _require_study(url, name)
    queue = SweepQueue(url, name)
    settings = queue.settings()
    _check_heartbeat(args, settings.get("heartbeat_interval") or 0, settings.get("grace_period") or 0,
                     "the study's")
    pending = queue.pending()
    stranded = _stranded(queue, slots)
    queue.close()  # no connection across the workers' fork
    if stranded and pending != (0, 0):
        return stranded
    code = 0
    if pending == (0, 0):
        print(f"sweep {name}: nothing waiting or running; `mhmoe sweep status` shows the results")
    else:
        code = run_workers(_worker_options(args, url, name), slots, log_dir=args.log_dir)
    queue = SweepQueue(url, name)  # the workers are gone: what they left that none of them could take
    stranded = _stranded(queue, slots)
    failed = _say_failed_points(queue)
    queue.close()
    return stranded or code or int(failed)


def _stranded(queue, slots) -> int:  # noqa: ANN001 - SweepQueue
    """Exit 2 with one line when points wait that none of ``slots`` can take and nothing runs (a worker
    would exit 0 after 0 trials and the points would wait for ever); else 0."""
    from mhmoe.commands.bad_input import EXIT_BAD_INPUT
    from mhmoe.sweep.devices import stranded

    why = stranded(queue, max(slot.devices for slot in slots))
    if why is None:
        return 0
    print(f"error: sweep {queue.study_name}: {why}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def cmd_run(args: argparse.Namespace) -> int:
    slots = _slots(args, args.workers)  # bad device flags fail before the study is created
    spec, the_plan = _load(args)
    return _run(args, spec, the_plan, slots)


def cmd_extend(args: argparse.Namespace) -> int:
    """``run`` for a sweep that exists: the spec's (new) comparisons, seed schedule or margin decide what is added."""
    from mhmoe.sweep.storage import check_storage, storage_url

    slots = _slots(args, args.workers)
    spec, the_plan = _load(args)
    url = storage_url(args.storage, spec.storage)
    check_storage(url)
    _require_study(url, spec.name)
    return _run(args, spec, the_plan, slots)


def _run(args: argparse.Namespace, spec, the_plan, slots) -> int:
    """Submit (and schedule), run local workers until nothing is left, then the verdict and the report."""
    from mhmoe.sweep.launch import run_workers
    from mhmoe.sweep.status import format_status, sweep_status

    url, queue = _submit(args, spec, list(the_plan.points), slots)
    pending = queue.pending()
    queue.close()
    code = 0
    if pending != (0, 0):
        code = run_workers(_worker_options(args, url, spec.name), slots, log_dir=args.log_dir)
    status = sweep_status(queue)
    print(format_status(spec.name, status, show_rows=False))
    _print_verdict(queue)
    if args.report:
        _report(spec, args.tracking_uri or queue.settings().get("tracking_uri"))
    failed = _say_failed_points(queue)
    return code or (1 if failed or not status.finished else 0)


def _print_verdict(queue) -> None:
    from mhmoe.sweep.verdicts import format_verdict, sweep_verdict

    found = sweep_verdict(queue)
    if found is not None:
        print("\n" + format_verdict(found), flush=True)


def _report(spec, tracking_uri: str | None) -> None:
    from mhmoe.commands.report import report_sweep

    argv = [str(spec.path), "--name", spec.name] + (["--tracking-uri", tracking_uri] if tracking_uri else [])
    try:
        report_sweep(spec, tracking_uri=tracking_uri, command=shlex.join(["mhmoe", "report", *argv]))
    except Exception as err:  # the sweep's results are in MLflow either way
        print(f"warning: report failed: {err!r}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from mhmoe.sweep.queue import SweepQueue
    from mhmoe.sweep.status import format_status, sweep_status

    url, name = _study_target(args)
    _require_study(url, name)
    queue = SweepQueue.with_heartbeats(url, name)
    print(format_status(name, sweep_status(queue), show_rows=not args.summary))
    _print_verdict(queue)
    return 0


ACTIONS = {"plan": cmd_plan, "submit": cmd_submit, "work": cmd_work, "run": cmd_run, "extend": cmd_extend,
           "status": cmd_status}


@refuses_bad_input("error")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return ACTIONS[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
