"""The sweep's MLflow parent run: opened by the first worker, summarised after every trial, closed at the end.

Its id is a study user attr, so every worker (on any node) finds the same parent. It records the
metric the plan resolved (``PARAM_SWEEP_METRIC``, read by the report), the verdict table (its
description, a ``mhmoe.winner`` tag, a metric per comparison), per-variant means (a table in the
description and an artifact), the best point and point counts; it ends FINISHED when every point is
done, FAILED otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mhmoe.sweep import summary, tracking, verdicts
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.status import format_status, sweep_status
from mhmoe.tracking import names

PARENT_RUN_ATTR = "mhmoe.mlflow_parent_run_id"
"""Study user attr: the parent run's id."""


def parent_run_id(queue: SweepQueue) -> str | None:
    return queue.study.user_attrs.get(PARENT_RUN_ATTR)


def sweep_metric(queue: SweepQueue, settings: dict[str, Any]) -> str | None:
    """The metric the plan resolved (stored at submit); studies submitted before that have it per trial."""
    return settings.get("metric") or next(
        (t.user_attrs["metric"] for t in queue.trials() if t.user_attrs.get("metric")), None)


def ensure_parent_run(queue: SweepQueue, tracking_uri: str) -> None:
    """Open the sweep's MLflow parent run once (first worker), or mark it running again."""
    settings = queue.settings()
    with queue.lock():
        run_id = parent_run_id(queue)
        if run_id is None:
            metric = sweep_metric(queue, settings)
            params = {"sweep.spec": settings.get("spec_path") or "", "sweep.retries": settings.get("retries"),
                      **({names.PARAM_SWEEP_METRIC: metric} if metric else {})}
            queue.study.set_user_attr(PARENT_RUN_ATTR, tracking.create_parent_run(
                tracking_uri, settings.get("experiment", queue.study_name), queue.study_name, params,
                description=summary.description(settings.get("description") or "", metric or "<metric>")))
        elif queue.pending()[0]:
            tracking.reopen(tracking_uri, run_id)  # new points were submitted after it finished


def update_parent_summary(queue: SweepQueue, tracking_uri: str, log: Callable[[str], None]) -> None:
    """Per-variant means, best point and point counts on the parent run (after every trial end)."""
    run_id = parent_run_id(queue)
    if run_id is None:
        return
    settings = queue.settings()
    points = queue.point_states()
    metric = sweep_metric(queue, settings)
    if not metric:
        return
    result = summary.parent_summary(points, metric, settings.get("direction") or "minimize")
    ended = sum(t.state.is_finished() for p in points for t in p.attempts)
    try:
        metrics, tags = dict(result.metrics), dict(result.tags)
        text = summary.description(settings.get("description") or "", metric, result.markdown(metric))
        found = verdicts.sweep_verdict(queue)
        if found is not None:
            # The answer first: the description opens with the verdict table, the winner is a tag.
            metrics.update(verdicts.parent_metrics(found))
            tags[names.TAG_WINNER] = found.winner or verdicts.NO_WINNER
            tags[names.TAG_VERDICT_RULES] = json.dumps(found.rules)
            text = verdicts.format_verdict_markdown(found) + "\n\n" + text
        tags[names.TAG_DESCRIPTION] = text
        tracking.log_summary(tracking_uri, run_id, metrics, tags, ended)
        if result.variants:
            tracking.log_table(tracking_uri, run_id, result.variants, summary.VARIANTS_TABLE)
    except Exception as err:  # noqa: BLE001 - a summary must not stop the sweep; the next trial end retries
        log(f"parent run summary not logged: {err!r}")
    log(format_status(queue.study_name, sweep_status(queue), show_rows=False))  # the overall line


def finish_parent_run(queue: SweepQueue, tracking_uri: str) -> None:
    """Close the sweep's parent run once nothing waits or runs."""
    run_id = parent_run_id(queue)
    if run_id is None or queue.pending() != (0, 0):
        return
    states = [p.state for p in queue.point_states()]
    tracking.terminate(tracking_uri, run_id, "FINISHED" if all(s == "done" for s in states) else "FAILED")


__all__ = ["ensure_parent_run", "finish_parent_run", "parent_run_id", "sweep_metric", "update_parent_summary"]
