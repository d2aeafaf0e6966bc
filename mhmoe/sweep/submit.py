"""Submit a validated spec: create or reopen its study, record the settings, enqueue missing points."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import optuna

from mhmoe.store import home
from mhmoe.sweep.checkpoints import study_uid
from mhmoe.sweep.plan import TrialPoint
from mhmoe.sweep.queue import SubmitResult, SweepQueue
from mhmoe.sweep.scheduler import VERDICT_SETTING, schedule, verdict_settings
from mhmoe.sweep.spec import SweepSpec


def resolve_tracking_uri(cli: str | None, spec: SweepSpec) -> str:
    """The store a sweep records at submit: ``--tracking-uri``, else the spec's
    (:func:`mhmoe.store.home.resolve_tracking_uri`)."""
    return home.resolve_tracking_uri(cli, spec.tracking_uri)


def sweep_settings(spec: SweepSpec, *, metric: str | None, tracking_uri: str, heartbeat_interval: int | None = None,
                   grace_period: int | None = None) -> dict[str, Any]:
    """What workers read from the study (they may run on nodes without the spec file).

    ``metric`` is the plan's (:attr:`mhmoe.sweep.plan.Plan.metric`): the one the workers report
    and the parent run records for the report.
    """
    return {
        "name": spec.name, "description": spec.description, "spec_path": str(spec.path) if spec.path else None,
        "metric": metric,
        "direction": spec.direction, "retries": spec.retries, "eval_tasks": list(spec.eval_tasks),
        "eval_limit": spec.eval_limit, "eval_allow_code": spec.eval_allow_code,
        "experiment": spec.experiment_name, "tracking_uri": tracking_uri,
        "heartbeat_interval": heartbeat_interval or spec.heartbeat_interval,
        "grace_period": grace_period or spec.grace_period,
    }


def submit_sweep(spec: SweepSpec, points: list[TrialPoint], *, storage: str, tracking_uri: str | None = None,
                 heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_failed: bool = False) -> tuple[SweepQueue, SubmitResult]:
    """Idempotent: only points whose config hash is not in the study yet are enqueued.

    Touches only Optuna storage (about a second); the MLflow parent run is opened by the first
    worker, which imports MLflow anyway.
    """
    uri = resolve_tracking_uri(tracking_uri, spec)
    queue = SweepQueue(storage, spec.name, create=True, direction=spec.direction)
    study_uid(queue)  # before the first worker: every node derives the same checkpoint folders
    with queue.lock():
        # Every point carries the plan's one metric (resolved in planning).
        metric = points[0].metric if points else queue.settings().get("metric") or spec.metric
        settings = sweep_settings(spec, metric=metric, tracking_uri=uri, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period)
        queue.set_settings({**settings, "variants": sorted({p.variant for p in points}),
                            VERDICT_SETTING: verdict_settings(spec, points)})
        if points:  # optuna-dashboard names the objective after it, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                queue.study.set_metric_names([points[0].metric])
    # With tuning, the comparison points wait for their replicate's tuned values (the scheduler adds them).
    result = queue.submit([] if spec.verdict.tune else points, retries=spec.retries, retry_failed=retry_failed)
    scheduled = schedule(queue)
    if scheduled:
        result = dataclasses.replace(result, added=(*result.added, *scheduled))
    return queue, result


__all__ = ["resolve_tracking_uri", "submit_sweep", "sweep_settings"]
