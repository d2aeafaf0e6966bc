"""One sweep worker: a long-lived process that loops claim -> train -> tell until the queue is empty.

Started by :mod:`mhmoe.sweep.launch` (one per device, forked after the imports) or on its own as
``python -m mhmoe.sweep.worker``; either way the torch / Lightning / MLflow imports are paid once
per worker process, not once per trial. Everything a trial
needs (resolved config, metric, MLflow run id) is in the Optuna study, so a worker on another node
needs only the storage URL and the study name.

A trial trains through :func:`mhmoe.training.runner.train` with a checkpoint folder fixed per grid
point (``<checkpoint root>/<sweep>/<config hash>``) and ``resume=True``: a re-queued attempt
continues from its newest usable checkpoint and the same MLflow run. The claim is fenced: a
worker whose trial was reaped and re-queued stops within one heartbeat and writes nothing more.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from mhmoe.sweep import tracking, worker_log
from mhmoe.sweep.checkpoints import checkpoint_root, point_checkpoint_dir
from mhmoe.sweep.devices import DeviceFit
from mhmoe.sweep.options import WorkerOptions, parse
from mhmoe.sweep.outage import StorageUnavailable
from mhmoe.sweep.parent_run import ensure_parent_run, finish_parent_run, parent_run_id, update_parent_summary
from mhmoe.sweep.queue import RETRY_NOT_BEFORE, STALE_REASON, Heartbeat, SweepQueue, worker_id
from mhmoe.sweep.scheduler import schedule
from mhmoe.tracking.names import TAG_RESTART
from mhmoe.training.checkpoint_files import ResumePick, pick_resume_checkpoint, set_aside
from mhmoe.training.failures import (
    REASON_MAX_CHARS,
    DiskFull,
    Diverged,
    Fence,
    LostClaim,
    NoClusterEnvironment,
    failure_reason,
)


class WorkerStop(BaseException):
    """SIGTERM/SIGINT: give the current trial back to the queue and exit."""


def _log(message: str, worker: str | None = None) -> None:
    worker_log.log(message, worker or worker_id())


def rank_zero_hooks(storage: str, study: str, trial_id: int, worker: str) -> tuple[Fence, list]:
    """Rank 0 of a data-parallel trial: the claim (checked against the queue before every checkpoint
    write) and the per-validation progress report, rebuilt in the rank process from the queue."""
    from mhmoe.sweep.progress import TrialProgress

    queue = SweepQueue(storage, study)
    trial = queue.storage.get_trial(trial_id)
    fence = queue.fence(trial)
    return fence, [TrialProgress(queue, trial, fence, lambda message: _log(message, worker))]


def _tracking_uri(options: WorkerOptions, settings: dict[str, Any]) -> str:
    """``--tracking-uri``, else $MLFLOW_TRACKING_URI, else the study's (:func:`resolve_tracking_uri`)."""
    from mhmoe.store.home import resolve_tracking_uri

    return resolve_tracking_uri(options.tracking_uri, recorded=settings.get("tracking_uri"))


def open_queue(options: WorkerOptions) -> SweepQueue:
    """The study with the sweep's heartbeat settings (read from the study unless overridden)."""
    return SweepQueue.with_heartbeats(options.storage, options.study, heartbeat_interval=options.heartbeat_interval,
                                      grace_period=options.grace_period)


def _evaluate(settings: dict[str, Any], checkpoint: Path, run_id: str, tracking_uri: str) -> dict[str, Any]:
    """lm-eval on the final checkpoint when the spec lists tasks and mhmoe.evaluation exists."""
    tasks = settings.get("eval_tasks") or []
    if not tasks:
        return {}
    try:
        from mhmoe.evaluation import evaluate_checkpoint
    except ImportError:
        _log(f"eval tasks {tasks} skipped: mhmoe.evaluation is not available")
        return {"eval_skipped": "mhmoe.evaluation not available"}
    import torch

    try:
        evaluate_checkpoint(checkpoint, tasks, limit=settings.get("eval_limit"), run_id=run_id,
                            tracking_uri=tracking_uri, device="cuda" if torch.cuda.is_available() else "cpu",
                            allow_code=bool(settings.get("eval_allow_code", False)))
        return {"eval_tasks": list(tasks)}
    except Exception as err:  # evaluation must not lose a finished training run
        _log(f"eval failed: {err!r}")
        return {"eval_error": repr(err)[-500:]}


def _trial_run(queue: SweepQueue, trial: FrozenTrial, tracking_uri: str, settings: dict[str, Any],
               checkpoint_dir: Path) -> tuple[str, dict[str, str], ResumePick, str | None]:
    """The point's MLflow child run, its tags, the checkpoint to resume and why it restarts (if it does).

    With a usable checkpoint (last, else previous) the attempt continues the point's run. Without
    one, training restarts from step 0 in a fresh run (MLflow would refuse the re-logged params,
    e.g. the re-measured peak FLOP/s), and the earlier run is deleted (restorable in the UI). When
    checkpoints existed but none is usable, they are set aside as ``*.unusable`` and the reason
    is recorded on the new run and the trial: a point is never lost to a bad checkpoint.
    """
    attrs = trial.user_attrs
    tags = tracking.trial_tags(queue.study_name, trial.number, attrs)
    pick = pick_resume_checkpoint(checkpoint_dir)
    run_id = attrs.get("mlflow_run_id")
    if run_id and pick.path is not None:  # resume: same run, this attempt's tags
        tracking.set_tags(tracking_uri, run_id, tags)
        tracking.reopen(tracking_uri, run_id)
        return run_id, tags, pick, None
    restart = None
    if pick.problems:
        set_aside(checkpoint_dir)
        restart = "no usable checkpoint, restarted from step 0: " + "; ".join(pick.problems)
        tags = {**tags, TAG_RESTART: restart[:REASON_MAX_CHARS]}
        pick = ResumePick(path=None)
    if run_id:
        tracking.delete(tracking_uri, run_id)
    run_id = tracking.create_trial_run(tracking_uri, settings.get("experiment", queue.study_name),
                                       parent_run_id(queue), attrs["point"], tags)
    # Stored before training starts: a re-queued attempt must find it even if this worker dies.
    try:
        queue.set_attrs(trial, {"mlflow_run_id": run_id, **({"restart_reason": restart} if restart else {})})
    except LostClaim:
        tracking.delete(tracking_uri, run_id)  # reaped before it started: the new attempt makes its own run
        raise
    return run_id, tags, pick, restart


def _train(queue: SweepQueue, trial: FrozenTrial, options: WorkerOptions, settings: dict[str, Any],
           run_id: str, tags: dict[str, str], checkpoint_dir: Path,
           pick: ResumePick) -> tuple[Any, float, dict[str, Any]]:
    """Train (resuming ``pick``) with a heartbeat that fences the claim; (TrainResult, seconds, eval attrs)."""
    from mhmoe.config.run import RunConfig
    from mhmoe.sweep.progress import TrialProgress
    from mhmoe.training.ranks import RankZeroHooks
    from mhmoe.training.request import TrainRequest
    from mhmoe.training.runner import train

    attrs = trial.user_attrs
    tracking_uri = _tracking_uri(options, settings)
    fence = queue.fence(trial)
    with Heartbeat(queue, trial, queue.storage.heartbeat_interval or 0, fence):
        start = time.perf_counter()
        result = train(TrainRequest(
            config=RunConfig.from_dict(attrs["config"]), tracking_uri=tracking_uri,
            experiment_name=settings.get("experiment", queue.study_name), run_name=attrs["point"], tags=tags,
            parent_run_id=parent_run_id(queue), run_id=run_id, checkpoint_dir=checkpoint_dir, resume=True,
            progress=False, fence=fence, resume_pick=pick, callbacks=[TrialProgress(queue, trial, fence, _log)],
            rank_zero_hooks=RankZeroHooks("mhmoe.sweep.worker:rank_zero_hooks", {
                "storage": queue.url, "study": queue.study_name, "trial_id": trial._trial_id, "worker": worker_id()}),
        ))
        seconds = time.perf_counter() - start
        fence.verify()  # lost while validating or saving the final checkpoint: the new owner reports
        return result, seconds, _evaluate(settings, result.checkpoint_path, result.run_id, tracking_uri)


def _fail(queue: SweepQueue, trial: FrozenTrial, tracking_uri: str, run_id: str | None, reason: str, *,
          error: str | None = None, retry: bool = True, count_attempt: bool = True,
          attrs: dict[str, Any] | None = None) -> str:
    """End the attempt as failed, the one place that records why: Optuna attrs, MLflow tag and status.

    Nothing is written when the attempt was no longer ours (``lost``). The MLflow run is closed
    FAILED either way; a retry reopens it.
    """
    outcome = queue.fail(trial, reason, error=error, retry=retry, count_attempt=count_attempt, attrs=attrs)
    if outcome != "lost" and run_id:
        tracking.mark_failed(tracking_uri, run_id, reason)
    return outcome


def _fail_outage(queue: SweepQueue, trial: FrozenTrial, tracking_uri: str, run_id: str | None,
                 err: StorageUnavailable) -> str:
    """The sweep database stayed down past the retry window mid-trial: re-queue the point without using
    up a retry (the outage is not the point's fault), the reason in Optuna, MLflow and the log.

    If the database is still down when that write has retried a whole window too, the MLflow run gets
    the reason and the worker stops; the trial is then reaped as stale once the database is back.
    """
    reason = failure_reason(err)
    label = trial.user_attrs["point"]
    _log(f"trial {trial.number} {label}: {reason}")
    try:
        outcome = _fail(queue, trial, tracking_uri, run_id, reason, count_attempt=False)
    except StorageUnavailable:
        if run_id:
            tracking.mark_failed(tracking_uri, run_id, reason)
        raise
    _log(f"trial {trial.number} {label} re-queued after the storage outage")
    return outcome


def _tell(queue: SweepQueue, trial: FrozenTrial, result: Any, tracking_uri: str, attrs: dict[str, Any]) -> str:
    """Report the trial's metric to Optuna (FAIL without retry when it is missing or not finite)."""
    metric = trial.user_attrs["metric"]
    metrics = dict(result.metrics)
    if metric not in metrics:  # e.g. resumed at max_steps: the run logged it on the earlier attempt
        metrics.update(tracking.run_metrics(tracking_uri, result.run_id))
    value = metrics.get(metric)
    attrs = {"start_step": int(result.start_step), "final_step": int(result.final_step),
             "checkpoint": str(result.checkpoint_path), **attrs}
    if value is None or not math.isfinite(float(value)):
        # A diverged or metric-less run would fail the same way again: no retry.
        reason = f"metric {metric!r} is {value!r}; logged metrics: {sorted(metrics)}"
        return _fail(queue, trial, tracking_uri, result.run_id, reason, retry=False, attrs=attrs)
    if not queue.complete(trial, float(value), attrs):
        _log(f"trial {trial.number} finished but was reaped as stale meanwhile; result dropped")
        return "lost"
    _log(f"trial {trial.number} {trial.user_attrs['point']} done: {metric}={float(value):.4g} "
         f"(steps {result.start_step}->{result.final_step})")
    return "done"


def run_trial(queue: SweepQueue, trial: FrozenTrial, options: WorkerOptions) -> str:
    """Train one claimed trial and tell the result; returns done, failed, retried or lost."""
    claimed = time.perf_counter()
    settings = queue.settings()
    tracking_uri = _tracking_uri(options, settings)
    label = trial.user_attrs["point"]
    _log(f"trial {trial.number} {label} (attempt {trial.user_attrs.get('attempt', 1)}) started")
    run_id = None
    try:
        checkpoint_dir = point_checkpoint_dir(queue, checkpoint_root(options.checkpoint_root),
                                              trial.user_attrs["config_hash"])
        run_id, tags, pick, restart = _trial_run(queue, trial, tracking_uri, settings, checkpoint_dir)
        if restart or pick.problems:
            why = restart or f"resuming {pick.path.name if pick.path else '-'}: " + "; ".join(pick.problems)
            _log(f"trial {trial.number} {label}: {why}")
        result, train_s, eval_attrs = _train(queue, trial, options, settings, run_id, tags, checkpoint_dir, pick)
    except WorkerStop:
        _fail(queue, trial, tracking_uri, run_id, "interrupted (worker stopped); re-queued", count_attempt=False)
        _log(f"trial {trial.number} {label} interrupted; re-queued")
        raise
    except LostClaim as err:
        _log(f"trial {trial.number} {label}: {err}")
        return "lost"
    except StorageUnavailable as err:
        return _fail_outage(queue, trial, tracking_uri, run_id, err)
    except Exception as err:
        reason = failure_reason(err)
        # A full disk is still full a moment later: the retry waits (any worker), meanwhile others train.
        pause = options.disk_full_pause if isinstance(err, DiskFull) else 0.0
        # Deterministic failures: a retry would diverge at the same step again, or find no cluster again.
        outcome = _fail(queue, trial, tracking_uri, run_id, reason, error=traceback.format_exc(),
                        retry=not isinstance(err, (Diverged, NoClusterEnvironment)),
                        attrs={RETRY_NOT_BEFORE: time.time() + pause} if pause else None)
        what = {"retried": "re-queued" + (f", waits {pause:.0f} s" if pause else ""), "failed": "no retry",
                "lost": "no longer ours"}[outcome]
        _log(f"trial {trial.number} {label} failed ({what}): {reason}\n{traceback.format_exc()}")
        return outcome
    timing = {"train_seconds": round(train_s, 3),
              "overhead_seconds": round(time.perf_counter() - claimed - train_s, 3)}
    return _tell(queue, trial, result, tracking_uri, {**timing, **eval_attrs})


def close_reaped(queue: SweepQueue, options: WorkerOptions) -> int:
    """Reap stale trials (their workers died) and close their MLflow runs FAILED with the reason;
    returns how many of them had no attempts left (their points failed for good)."""
    reaped = queue.reap()
    if not reaped:
        return 0
    uri = _tracking_uri(options, queue.settings())
    for trial, requeued in reaped:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            tracking.mark_failed(uri, run_id, trial.user_attrs.get("failure_reason", STALE_REASON))
        _log(f"trial {trial.number} {trial.user_attrs.get('point')} was stale: "
             + ("re-queued" if requeued else "no attempts left"))
    return sum(not requeued for _, requeued in reaped)


def _schedule(queue: SweepQueue) -> list[str]:
    """Queue what the results so far call for (tuning trials, more seeds); logged, never fatal."""
    try:
        added = schedule(queue)
    except Exception as err:  # noqa: BLE001 - the next trial end (any worker) schedules again
        _log(f"scheduling failed, retried after the next trial: {err!r}")
        return []
    if added:
        _log(f"queued {len(added)} point(s): {', '.join(added[:6])}" + (" ..." if len(added) > 6 else ""))
    return added


SUMMARY_EVERY_S = 60.0
"""With many workers, each writes the parent run's summary (which reads every trial) at most this often."""
SUMMARY_ALWAYS_UP_TO = 8
"""Up to this many running trials, every trial end writes the summary."""


def summary_due(queue: SweepQueue, last: float) -> bool:
    """Whether this trial end writes the summary: always in a small sweep and once nothing waits (the last
    trials end with it up to date), else every :data:`SUMMARY_EVERY_S` per worker."""
    waiting, running = queue.pending()
    return waiting == 0 or running <= SUMMARY_ALWAYS_UP_TO or time.monotonic() - last >= SUMMARY_EVERY_S


def run_worker(options: WorkerOptions) -> int:
    """Claim and train trials until none is left (or ``max_trials``); returns an exit code: 1 when a
    point it ran, or a dead worker's point it reaped, failed for good."""
    queue = open_queue(options)
    ensure_parent_run(queue, _tracking_uri(options, queue.settings()))
    done = 0
    failed = 0
    last_summary = -math.inf
    fits = DeviceFit(options.devices, _log)
    while options.max_trials is None or done < options.max_trials:
        failed += close_reaped(queue, options)  # a dead worker's point with no attempts left failed for good
        trial = queue.claim(accepts=fits, reap=False)
        if trial is None:
            if _schedule(queue):  # e.g. the last trial's worker died before it scheduled what follows
                continue
            waiting, running = fits.waiting(queue), queue.pending()[1]
            if waiting == 0 and (running == 0 or not options.linger):
                break
            time.sleep(options.poll_s)
            continue
        failed += run_trial(queue, trial, options) == "failed"
        done += 1
        _schedule(queue)
        if summary_due(queue, last_summary):
            update_parent_summary(queue, _tracking_uri(options, queue.settings()), _log)
            last_summary = time.monotonic()
    finish_parent_run(queue, _tracking_uri(options, queue.settings()))
    _log(f"exiting after {done} trial(s)" + (f", {failed} failed for good" if failed else ""))
    return 1 if failed else 0


def preload() -> None:
    """Pay the torch / Lightning / MLflow imports (~6 s) once; forked workers inherit them."""
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401
    from lightning.pytorch.loggers import MLFlowLogger  # noqa: F401

    import mhmoe.data.datamodule  # noqa: F401
    import mhmoe.training.checkpoint_io  # noqa: F401
    import mhmoe.training.lit_module  # noqa: F401
    import mhmoe.training.runner  # noqa: F401
    from mhmoe.training.quiet import quiet_library_logs

    quiet_library_logs()  # one line per trial from us; Lightning's per-fit banners are noise here


def _stop(signum: int, frame: Any) -> None:
    # Once: a Ctrl-C reaches the worker directly and again via the supervisor; the second must not
    # interrupt the re-queue of the first.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise WorkerStop(signal.Signals(signum).name)


def serve(options: WorkerOptions) -> int:
    """The worker process body: threads, signal handling, then :func:`run_worker`."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    worker_log.take_console()
    preload()
    if options.threads > 0:
        import torch

        torch.set_num_threads(options.threads)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return run_worker(options)
    except WorkerStop as stop:
        _log(f"stopped by {stop}")
        return 143
    except StorageUnavailable as err:
        _log(f"stopped: {err}")
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    return serve(parse(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    # Every store is written synchronously by now; skip the ~2 s interpreter teardown of torch/MLflow.
    os._exit(main())
